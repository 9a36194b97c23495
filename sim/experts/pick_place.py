"""Pick-and-place expert: grasp, carry above the platform, lower, release, back off."""

from __future__ import annotations

import numpy as np

from sim.experts.base import Expert
from sim.experts.grasp import GraspSkill

CARRY_Z = 0.13
"""TCP height (m) while carrying: the cube clears the 3 cm platform easily."""


class PickPlaceExpert(Expert):
    task = "pick_place"

    def on_reset(self) -> None:
        self.skill = GraspSkill(self)

    def plan(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        ee = obs["ee_pos"].astype(np.float64)
        cube = obs["cube_pos"].astype(np.float64)
        goal = obs["goal_pos"].astype(np.float64)  # cube centre when placed
        if self.phase not in ("carry", "lower", "release", "back"):
            result = self.skill.step(ee, cube, obs)
            if result is not None:
                return result
            self.goto("carry")
        if self.phase in ("carry", "lower") and not self.skill.holding(ee, cube, obs):
            self.retry()  # dropped it: start over wherever it fell
            return np.array([0.0, 0.0, 1.0]), -1.0
        place = goal + self.aim * 0.7
        if self.phase == "carry":
            target = np.array([place[0], place[1], CARRY_Z])
            if ee[2] < goal[2] + 0.04:  # first get up to height, then across
                target[:2] = ee[:2]
            if np.hypot(*(target[:2] - ee[:2])) < self.tol(0.006) and ee[2] > CARRY_Z - 0.03:
                self.goto("lower")
            return self.toward(ee, target), 1.0
        if self.phase == "lower":
            # TCP sits at the cube centre (+ grasp offset), so aim the cube, not the TCP
            offset = ee - cube
            target = np.array([place[0], place[1], goal[2] + 0.004]) + offset
            if cube[2] - goal[2] < self.tol(0.006):
                self.goto("release")
            return self.toward(ee, target, speed=0.6), 1.0
        if self.phase == "release":
            if self.phase_steps >= 4:
                self.goto("back")
            return np.zeros(3), -1.0
        # back: straight up, jaw open; if the cube fell off, try again
        if self.phase_steps > 6 and np.hypot(*(cube[:2] - goal[:2])) > 0.04:
            self.retry()
        return self.toward(ee, np.array([ee[0], ee[1], CARRY_Z])), -1.0
