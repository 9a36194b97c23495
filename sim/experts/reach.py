"""Reach expert: fly to the goal; when a (noisy) aim point is reached without success, re-aim."""

from __future__ import annotations

import numpy as np

from sim.experts.base import Expert


class ReachExpert(Expert):
    task = "reach"
    aim_scale: float = 2.5
    """Aim error relative to the other experts' (std 5.5 cm per axis at noise 1, 3.3 cm at the
    default noise). A goal floating in free space gives no contact to confirm arrival, and
    depth is hard to judge from a camera view, so an operator's aim is much worse here than
    over a cube on the table; with the 5 cm success radius a smaller error would make every
    noisy reach a clean success, and the demos would not be mixed."""

    def _new_aim(self) -> np.ndarray:
        """Reaching is in free space: the aiming error is 3-d."""
        std = self.noise_model.aim_std * self.aim_scale * self.noise
        return self.rng.normal(0.0, std, 3)

    def plan(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        ee, goal = obs["ee_pos"].astype(np.float64), obs["goal_pos"].astype(np.float64)
        target = goal + self.aim
        if self.phase == "start":
            self.goto("move")
        if np.linalg.norm(target - ee) < 0.004 and self.phase_steps > 3:
            self.retry("move")  # at the aim point but not done: look again, correct
        return self.toward(ee, target, speed=1.0 if self.phase_steps < 30 else 0.5), -1.0
