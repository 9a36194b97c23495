"""Drawer expert: hover over the handle, descend, close on the bar, pull back.

The cabinet may be yawed, so the drawer slides up to 17 degrees off the x axis; the expert
does not know the yaw (it is not observed) and pulls along -x while following the handle
sideways, and the slide turns the pull into the drawer's own direction.
"""

from __future__ import annotations

import numpy as np

from sim.experts.base import Expert
from sim.experts.grasp import EMPTY_WIDTH, OPEN_WIDTH, STALL_STEPS

HOVER = 0.06
"""Hover height above the handle (m)."""


class DrawerExpert(Expert):
    task = "drawer"
    open_to: float = 0.18
    """Opening (m) the expert pulls to: past the success threshold (80% of the 0.2 m travel),
    short of the end stop."""

    def plan(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        ee = obs["ee_pos"].astype(np.float64)
        handle = obs["handle_pos"].astype(np.float64)
        opening = float(obs["drawer_opening"][0])
        width = float(obs["gripper_width"][0])
        aim = handle + self.aim * np.array([0.5, 1.0, 0.0])
        if self.phase == "start":
            target = np.array([ee[0], ee[1], max(float(ee[2]), handle[2] + HOVER)])
            if width > OPEN_WIDTH and ee[2] > handle[2] + HOVER - 0.02:
                self.goto("hover")
            return self.toward(ee, target), -1.0
        if self.phase == "hover":
            target = aim + np.array([0.0, 0.0, HOVER])
            if np.linalg.norm(target - ee) < self.tol(0.008):
                self.goto("descend")
            return self.toward(ee, target), -1.0
        if self.phase == "descend":
            if self.phase_steps > STALL_STEPS:  # landed on the bar or the drawer: re-aim
                self.retry()
                return np.array([0.0, 0.0, 1.0]), -1.0
            if abs(ee[2] - aim[2]) < self.tol(0.005):
                self.goto("close")
            return self.toward(ee, aim, speed=0.7), -1.0
        if self.phase == "close":
            if self.phase_steps >= 5:
                if width < EMPTY_WIDTH:
                    self.retry()
                    return np.zeros(3), -1.0
                self.goto("pull")
            return np.zeros(3), 1.0
        # pull: back along -x, tracking the handle's y as the (yawed) drawer slides
        off = handle - ee  # the TCP may sit anywhere along the bar (y), not off it in x or z
        if width < EMPTY_WIDTH or abs(off[0]) > 0.025 or abs(off[2]) > 0.03:
            self.retry()  # slipped off the handle
            return np.array([0.0, 0.0, 1.0]), -1.0
        if opening >= self.open_to:
            return np.zeros(3), 1.0
        move = self.toward(ee, handle + np.array([-0.05, 0.0, 0.0]), speed=0.7)
        return move, 1.0
