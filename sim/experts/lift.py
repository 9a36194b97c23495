"""Lift expert: hover over the cube, descend, close, lift; re-grasp when the grasp fails."""

from __future__ import annotations

import numpy as np

from sim.experts.base import Expert
from sim.experts.grasp import GraspSkill


class LiftExpert(Expert):
    task = "lift"
    lift_to: float = 0.14
    """TCP height (m) to carry the cube to: comfortably above the success height."""

    def on_reset(self) -> None:
        self.skill = GraspSkill(self)

    def plan(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        ee, cube = obs["ee_pos"].astype(np.float64), obs["cube_pos"].astype(np.float64)
        if self.phase != "carry":
            result = self.skill.step(ee, cube, obs)
            if result is not None:
                return result
            self.goto("carry")
        # carry: straight up, watching that the cube follows
        if not self.skill.holding(ee, cube, obs):
            self.retry()
            return np.array([0.0, 0.0, 1.0]), -1.0
        target = np.array([ee[0], ee[1], self.lift_to])
        return self.toward(ee, target), 1.0
