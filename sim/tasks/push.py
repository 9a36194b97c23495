"""Push: slide a cube across the table onto a goal spot without lifting it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import mujoco
import numpy as np

from sim.robot import RobotIds
from sim.tasks.base import (
    FreeBody,
    Task,
    TaskConfig,
    add_cube,
    add_goal_marker,
    tanh_closeness,
)


@dataclass(frozen=True, kw_only=True)
class PushConfig(TaskConfig):
    """Push task settings."""

    max_steps: int = 100
    """Time limit (control steps): 5 s at 20 Hz."""
    cube_half: float = 0.02
    """Half edge of the cube (m)."""
    cube_mass: float = 0.1
    """Cube mass (kg)."""
    cube_low: tuple[float, float] = (0.42, -0.12)
    """Lower corner (x, y) of the cube's start region (m)."""
    cube_high: tuple[float, float] = (0.58, 0.12)
    """Upper corner (x, y) of the cube's start region (m)."""
    goal_distance: tuple[float, float] = (0.10, 0.18)
    """Range of the goal's distance from the cube's start (m), in a random direction."""
    region_low: tuple[float, float] = (0.32, -0.25)
    """Goals are kept inside this rectangle (lower corner, m)..."""
    region_high: tuple[float, float] = (0.68, 0.25)
    """...and this upper corner (m)."""
    success_radius: float = 0.03
    """Success once the cube's centre is within this xy distance of the goal (m)."""
    w_reach: float = 0.5
    """Weight of the TCP-to-cube closeness term."""
    w_push: float = 2.0
    """Weight of the cube-to-goal closeness term."""
    w_success: float = 5.0
    """Weight of the success bonus."""


def default_config() -> PushConfig:
    return PushConfig()


class Push(Task):
    name = "push"
    obs_shapes: ClassVar[dict[str, tuple[int, ...]]] = {
        "cube_pos": (3,),
        "cube_quat": (4,),
        "goal_pos": (3,),
    }
    config: PushConfig

    def build(self, spec: mujoco.MjSpec) -> None:
        c = self.config
        add_cube(spec, "cube", c.cube_half, c.cube_mass, [0.2, 0.4, 0.85, 1])
        add_goal_marker(
            spec,
            "goal",
            mujoco.mjtGeom.mjGEOM_CYLINDER,
            [c.success_radius, 0.001, 0],
            [0.1, 0.8, 0.2, 0.8],
        )

    def bind(self, model: mujoco.MjModel, robot: RobotIds) -> None:
        self.cube = FreeBody.lookup(model, "cube")
        self.mocap = int(model.body_mocapid[model.body("goal").id])
        self._tcp = robot.tcp
        self.goal = np.zeros(3)

    def variable_parts(self, model: mujoco.MjModel) -> dict[str, list[int]]:
        geom = model.geom("cube").id
        return {
            "mass_bodies": [model.body("cube").id],
            "size_geoms": [geom],
            "friction_geoms": [geom],
        }

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> dict:
        c = self.config
        xy = rng.uniform(c.cube_low, c.cube_high)
        self.half = half = float(model.geom_size[self.cube.geom, 2])
        self.cube.place(data, np.array([xy[0], xy[1], half]))
        for _ in range(100):  # rejection-sample a goal direction that stays on the table
            angle = rng.uniform(-np.pi, np.pi)
            dist = rng.uniform(*c.goal_distance)
            goal = xy + dist * np.array([np.cos(angle), np.sin(angle)])
            if np.all(goal >= c.region_low) and np.all(goal <= c.region_high):
                break
        self.goal = np.array([goal[0], goal[1], 0.0])
        data.mocap_pos[self.mocap] = self.goal
        return {"cube_xy": [float(v) for v in xy], "goal_xy": [float(v) for v in goal]}

    def observe(self, data: mujoco.MjData, obs: dict[str, np.ndarray]) -> None:
        obs["cube_pos"] = self.cube.pos(data).astype(np.float32)
        obs["cube_quat"] = self.cube.quat(data).astype(np.float32)
        obs["goal_pos"] = self.goal.astype(np.float32)

    def evaluate(
        self, data: mujoco.MjData, obs: dict[str, np.ndarray]
    ) -> tuple[dict[str, float], bool]:
        c = self.config
        cube = self.cube.pos(data)
        to_goal = float(np.hypot(cube[0] - self.goal[0], cube[1] - self.goal[1]))
        to_cube = float(np.linalg.norm(data.site_xpos[self._tcp] - cube))
        success = to_goal < c.success_radius and float(cube[2]) < 1.5 * self.half  # on the table
        return {
            "reach": c.w_reach * tanh_closeness(to_cube, 10.0),
            "push": c.w_push * tanh_closeness(to_goal, 10.0),
            "success": c.w_success * float(success),
        }, success
