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
    centre: tuple[float, float] = (0.5, 0.0)
    """Nominal centre (x, y) of the cube's start and of the goal (m): in front of the arm."""
    cube_range: float = 0.15
    """The cube starts within +-cube_range of `centre` in x and in y (m), as the task
    definition asks."""
    goal_range: float = 0.15
    """The goal is drawn within +-goal_range of `centre` in x and in y (m), independently of
    the cube (apart from `min_distance`)."""
    min_distance: float = 0.1
    """Cube and goal are redrawn until at least this far apart (xy, m), so no episode starts
    solved or nearly solved: twice the success radius."""
    success_radius: float = 0.05
    """Success once the cube's centre is within this xy distance of the goal (m), with the
    cube on the table (its centre below 1.5 half edges): the goal is a spot on the table."""
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
        centre = np.asarray(c.centre)
        for _ in range(100):  # rejection sampling keeps both draws uniform in their squares
            xy = rng.uniform(centre - c.cube_range, centre + c.cube_range)
            goal = rng.uniform(centre - c.goal_range, centre + c.goal_range)
            if np.hypot(*(goal - xy)) >= c.min_distance:
                break
        self.half = half = float(model.geom_size[self.cube.geom, 2])
        self.cube.place(data, np.array([xy[0], xy[1], half]))
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
