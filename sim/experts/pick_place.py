"""Pick-and-place expert: grasp, carry over the goal, bring the cube onto it, hold still.

The goal is a point for the cube's centre, on the table or in the air; the cube stays in the
jaw throughout (a goal in the air could not be met otherwise), and the episode is won once
the cube is there and the arm has come to rest, which the expert ensures by sending exact
zeros (`steady`) once the cube is in place.
"""

from __future__ import annotations

import numpy as np

from sim.experts.base import Expert
from sim.experts.grasp import GraspSkill

CARRY_Z = 0.12
"""Lowest TCP height (m) while crossing to the goal: the cube hangs clear of the table."""
PLACE_TOL = 0.008
"""How close (m) the cube's centre gets to the (aimed) goal before the expert holds still."""
DRIFT = 0.035
"""If the held cube drifts this far (m) from the goal while holding still, go back to placing."""


class PickPlaceExpert(Expert):
    task = "pick_place"

    def on_reset(self) -> None:
        self.skill = GraspSkill(self)

    def plan(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        ee = obs["ee_pos"].astype(np.float64)
        cube = obs["cube_pos"].astype(np.float64)
        goal = obs["goal_pos"].astype(np.float64)  # where the cube's centre should be
        if self.phase not in ("carry", "place", "hold"):
            result = self.skill.step(ee, cube, obs)
            if result is not None:
                return result
            self.goto("carry")
        if not self.skill.holding(ee, cube, obs):
            self.retry()  # dropped it: start over wherever it fell
            return np.array([0.0, 0.0, 1.0]), -1.0
        place = goal + self.aim * 0.7
        offset = ee - cube  # the grasp offset: steer the cube, not the TCP
        if self.phase == "carry":
            cross_z = max(CARRY_Z, place[2] + offset[2])
            target = np.array([place[0], place[1], cross_z])
            if ee[2] < cross_z - 0.04:  # first get up to height, then across
                target[:2] = ee[:2]
            if np.hypot(*(target[:2] - ee[:2])) < self.tol(0.01) and ee[2] > cross_z - 0.04:
                self.goto("place")
            return self.toward(ee, target), 1.0
        if self.phase == "place":
            if np.linalg.norm(place - cube) < self.tol(PLACE_TOL):
                self.goto("hold")
            else:
                return self.toward(ee, place + offset, speed=0.6), 1.0
        # hold: hands off; the arm settles and the task's stillness test passes
        if np.linalg.norm(goal - cube) > DRIFT:
            self.goto("place")
        self.steady = True
        return np.zeros(3), 1.0
