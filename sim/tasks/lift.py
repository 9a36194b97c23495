"""Lift: grasp a cube lying on the table and raise it `lift_height` (4 cm) above the table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import mujoco
import numpy as np

from sim.robot import RobotIds
from sim.tasks.base import FreeBody, Task, TaskConfig, add_cube, grasped, tanh_closeness


@dataclass(frozen=True, kw_only=True)
class LiftConfig(TaskConfig):
    """Lift task settings."""

    max_steps: int = 80
    """Time limit (control steps): 4 s at 20 Hz, about twice what the expert needs."""
    cube_half: float = 0.02
    """Half edge of the cube (m): a 4 cm cube in an 8 cm jaw."""
    cube_mass: float = 0.1
    """Cube mass (kg)."""
    cube_low: tuple[float, float] = (0.4, -0.15)
    """Lower corner (x, y) of the cube's start region (m)."""
    cube_high: tuple[float, float] = (0.6, 0.15)
    """Upper corner (x, y) of the cube's start region (m)."""
    cube_yaw: float = 0.3
    """Cube yaw is drawn from [-cube_yaw, cube_yaw] (rad); the jaw squares it up."""
    lift_height: float = 0.04
    """Success once the cube is raised this far above the table (m): its centre this far above
    its resting height, i.e. its bottom face 4 cm clear of the table top."""
    w_reach: float = 1.0
    """Weight of the TCP-to-cube closeness term."""
    w_grasp: float = 0.5
    """Weight of the both-pads-touch-the-cube term."""
    w_lift: float = 2.0
    """Weight of the lifted-fraction term (only while grasped)."""
    w_success: float = 5.0
    """Weight of the success bonus."""


def default_config() -> LiftConfig:
    return LiftConfig()


class Lift(Task):
    name = "lift"
    obs_shapes: ClassVar[dict[str, tuple[int, ...]]] = {"cube_pos": (3,), "cube_quat": (4,)}
    config: LiftConfig

    def build(self, spec: mujoco.MjSpec) -> None:
        c = self.config
        add_cube(spec, "cube", c.cube_half, c.cube_mass, [0.85, 0.2, 0.2, 1])

    def bind(self, model: mujoco.MjModel, robot: RobotIds) -> None:
        self.cube = FreeBody.lookup(model, "cube")
        self.pads = robot.pads
        self._tcp = robot.tcp

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
        yaw = float(rng.uniform(-c.cube_yaw, c.cube_yaw))
        self.rest_z = float(model.geom_size[self.cube.geom, 2])
        self.cube.place(data, np.array([xy[0], xy[1], self.rest_z]), yaw)
        return {"cube_xy": [float(v) for v in xy], "cube_yaw": yaw}

    def observe(self, data: mujoco.MjData, obs: dict[str, np.ndarray]) -> None:
        obs["cube_pos"] = self.cube.pos(data).astype(np.float32)
        obs["cube_quat"] = self.cube.quat(data).astype(np.float32)

    def evaluate(
        self, data: mujoco.MjData, obs: dict[str, np.ndarray]
    ) -> tuple[dict[str, float], bool]:
        c = self.config
        cube = self.cube.pos(data)
        dist = float(np.linalg.norm(data.site_xpos[self._tcp] - cube))
        held = grasped(data, self.pads, self.cube.geom)
        height = float(cube[2]) - self.rest_z
        success = height >= c.lift_height
        terms = {
            "reach": c.w_reach * tanh_closeness(dist, 10.0),
            "grasp": c.w_grasp * float(held),
            "lift": c.w_lift * float(np.clip(height / c.lift_height, 0.0, 1.0)) * float(held),
            "success": c.w_success * float(success),
        }
        return terms, success
