"""Reach: bring the TCP to a goal point in free space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import mujoco
import numpy as np

from sim.robot import RobotIds
from sim.tasks.base import Task, TaskConfig, add_goal_marker, tanh_closeness


@dataclass(frozen=True, kw_only=True)
class ReachConfig(TaskConfig):
    """Reach task settings."""

    max_steps: int = 50
    """Time limit (control steps): 2.5 s at 20 Hz."""
    goal_centre: tuple[float, float, float] = (0.5, 0.0, 0.2)
    """Nominal goal position (m): in front of the arm, mid-height over the table."""
    goal_range: float = 0.15
    """The goal is drawn uniformly within +-goal_range of goal_centre in each axis (m), as the
    task definition asks; at the default it spans z 0.05-0.35: above the table, and below the
    home TCP (z 0.41), so an episode practically never starts solved."""
    success_radius: float = 0.05
    """Success once the TCP is within this distance of the goal (m)."""
    w_reach: float = 1.0
    """Weight of the TCP-to-goal closeness term."""
    w_success: float = 5.0
    """Weight of the success bonus."""


def default_config() -> ReachConfig:
    return ReachConfig()


class Reach(Task):
    name = "reach"
    obs_shapes: ClassVar[dict[str, tuple[int, ...]]] = {"goal_pos": (3,)}
    config: ReachConfig

    def build(self, spec: mujoco.MjSpec) -> None:
        add_goal_marker(
            spec,
            "goal",
            mujoco.mjtGeom.mjGEOM_SPHERE,
            [self.config.success_radius, 0, 0],  # the marker shows the success region
            [0.1, 0.8, 0.2, 0.35],
        )

    def bind(self, model: mujoco.MjModel, robot: RobotIds) -> None:
        self.mocap = int(model.body_mocapid[model.body("goal").id])
        self._tcp = robot.tcp
        self.model = model
        self.goal = np.zeros(3)

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> dict:
        c = self.config
        centre = np.asarray(c.goal_centre)
        self.goal = rng.uniform(centre - c.goal_range, centre + c.goal_range)
        data.mocap_pos[self.mocap] = self.goal
        return {"goal_pos": [float(v) for v in self.goal]}

    def observe(self, data: mujoco.MjData, obs: dict[str, np.ndarray]) -> None:
        obs["goal_pos"] = data.mocap_pos[self.mocap].astype(np.float32)

    def evaluate(
        self, data: mujoco.MjData, obs: dict[str, np.ndarray]
    ) -> tuple[dict[str, float], bool]:
        c = self.config
        dist = float(np.linalg.norm(data.site_xpos[self._tcp] - data.mocap_pos[self.mocap]))
        success = dist < c.success_radius
        return {
            "reach": c.w_reach * tanh_closeness(dist, 10.0),
            "success": c.w_success * float(success),
        }, success
