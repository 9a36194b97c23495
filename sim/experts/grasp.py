"""Top-down grasp skill shared by the lift and pick-and-place experts.

Phases (stored in the owning expert's `phase`): start (open the jaw, rise to hover height)
-> hover (over the object) -> descend -> close; `step` returns None once the jaw has closed on
something, and the owner takes over. Closing on nothing, or the object sliding away, sends the
expert back to `start` with a fresh aim: these are the re-grasps seen in noisy demos.
"""

from __future__ import annotations

import numpy as np

from sim.experts.base import Expert

OPEN_WIDTH = 0.07
"""Jaw width (m) that counts as open enough to descend over a 4 cm cube."""
EMPTY_WIDTH = 0.012
"""Jaw width (m) below which a closed jaw holds nothing."""
STALL_STEPS = 15
"""A descent still unfinished after this many steps is blocked (a finger on the object)."""


class GraspSkill:
    """Stateless helper over an expert's phase; see the module docstring."""

    hover: float = 0.07
    """Hover height of the TCP above the object's centre (m)."""
    grasp_floor: float = 0.022
    """Lowest TCP height while grasping (m): fingertips just above the table."""
    close_steps: int = 5
    """Control steps to let the jaw close before checking it (0.25 s at 20 Hz)."""

    def __init__(self, expert: Expert) -> None:
        self.e = expert

    def step(
        self, ee: np.ndarray, obj: np.ndarray, obs: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, float] | None:
        e = self.e
        width = float(obs["gripper_width"][0])
        aim = obj + e.aim
        grasp_z = max(float(obj[2]), self.grasp_floor)
        if e.phase == "start":
            target = np.array([ee[0], ee[1], max(float(ee[2]), grasp_z + self.hover)])
            if width > OPEN_WIDTH:
                e.goto("hover")
            return e.toward(ee, target), -1.0
        if e.phase == "hover":
            target = np.array([aim[0], aim[1], grasp_z + self.hover])
            err = target - ee
            if np.hypot(err[0], err[1]) < e.tol(0.008) and abs(err[2]) < e.tol(0.02):
                e.goto("descend")
            return e.toward(ee, target), -1.0
        if e.phase == "descend":
            target = np.array([aim[0], aim[1], grasp_z])
            err = target - ee
            if np.hypot(err[0], err[1]) > 0.03:  # object moved away: hover again
                e.goto("hover")
            elif e.phase_steps > STALL_STEPS:  # a finger landed on the object: re-aim
                e.retry("start")
            elif abs(err[2]) < e.tol(0.006):
                e.goto("close")
            return e.toward(ee, target, speed=0.7), -1.0
        if e.phase == "close":
            if e.phase_steps >= self.close_steps:
                if width < EMPTY_WIDTH:  # missed: closed on air
                    e.retry("start")
                    return np.zeros(3), -1.0
                return None
            return np.zeros(3), 1.0
        return None

    def holding(self, ee: np.ndarray, obj: np.ndarray, obs: dict[str, np.ndarray]) -> bool:
        """The jaw is closed on something and the object is still between the fingers."""
        width = float(obs["gripper_width"][0])
        return width > EMPTY_WIDTH and float(np.linalg.norm(obj - ee)) < 0.035
