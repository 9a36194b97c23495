"""Push expert: get behind the cube (relative to the goal), lower the closed jaw, push along the
cube-goal line with lateral correction; back off and re-align when the cube turns away."""

from __future__ import annotations

import numpy as np

from sim.experts.base import Expert

PUSH_Z = 0.025
"""TCP height while pushing (m): fingertips 5 mm above the table, pads centred on the cube."""
SAFE_Z = 0.09
"""TCP height (m) for moving around the cube."""
STANDOFF = 0.05
"""Distance (m) from the cube centre to the pusher when lining up."""


class PushExpert(Expert):
    task = "push"

    def plan(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        ee = obs["ee_pos"].astype(np.float64)
        cube = obs["cube_pos"].astype(np.float64)
        goal = obs["goal_pos"].astype(np.float64) + self.aim
        to_goal = goal[:2] - cube[:2]
        dist = float(np.linalg.norm(to_goal))
        u = to_goal / max(dist, 1e-6)  # push direction (2,)
        behind = cube[:2] - u * STANDOFF
        rel = ee[:2] - cube[:2]
        along = float(rel @ u)  # < 0: behind the cube
        lateral = float(rel @ np.array([-u[1], u[0]]))
        if self.phase in ("start", "lift"):
            if ee[2] > SAFE_Z - 0.01:
                self.goto("over")
            return self.toward(ee, np.array([ee[0], ee[1], SAFE_Z])), 1.0
        if self.phase == "over":  # above the line-up point
            target = np.array([behind[0], behind[1], SAFE_Z])
            if np.linalg.norm(target - ee) < self.tol(0.01):
                self.goto("lower")
            return self.toward(ee, target), 1.0
        if self.phase == "lower":
            target = np.array([behind[0], behind[1], PUSH_Z])
            if abs(ee[2] - PUSH_Z) < self.tol(0.006):
                self.goto("push")
            return self.toward(ee, target), 1.0
        # push: drive along u through the cube, correct sideways, slow down near the goal
        if abs(lateral) > 0.018 or along > -0.015:
            self.retry("lift")  # cube slipped off the pusher: go round again
            return np.array([0.0, 0.0, 1.0]), 1.0
        speed = float(np.clip(dist / 0.06, 0.15, 0.5))
        move = np.zeros(3)
        move[:2] = u * speed - 0.5 * lateral * np.array([-u[1], u[0]]) / 0.03
        move[2] = (PUSH_Z - ee[2]) / 0.03
        return move, 1.0
