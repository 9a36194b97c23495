"""Pick and place: pick a cube up and set it down on a raised platform, then let go."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import mujoco
import numpy as np

from sim.robot import COLLIDE_ROBOT, COLLIDE_WORLD, RobotIds
from sim.tasks.base import FreeBody, Task, TaskConfig, add_cube, grasped, tanh_closeness, touching


@dataclass(frozen=True, kw_only=True)
class PickPlaceConfig(TaskConfig):
    """Pick-and-place task settings."""

    max_steps: int = 120
    """Time limit (control steps): 6 s at 20 Hz."""
    cube_half: float = 0.02
    """Half edge of the cube (m)."""
    cube_mass: float = 0.1
    """Cube mass (kg)."""
    platform_half: tuple[float, float, float] = (0.05, 0.05, 0.015)
    """Half sizes of the target platform (m); 3 cm tall, so the cube must be lifted onto it."""
    region_low: tuple[float, float] = (0.38, -0.2)
    """Lower corner (x, y) of the region cube and platform are placed in (m)."""
    region_high: tuple[float, float] = (0.62, 0.2)
    """Upper corner (x, y) of that region (m)."""
    min_separation: float = 0.15
    """Minimum xy distance between the cube's start and the platform centre (m)."""
    success_radius: float = 0.035
    """Success needs the cube's centre within this xy distance of the platform centre (m)..."""
    rest_tolerance: float = 0.01
    """...its bottom within this height of the platform top (m), and the jaw off the cube."""
    w_reach: float = 0.5
    """Weight of the TCP-to-cube closeness term."""
    w_grasp: float = 0.5
    """Weight of the both-pads-touch-the-cube term."""
    w_transport: float = 1.0
    """Weight of the cube-to-above-the-platform closeness term."""
    w_place: float = 2.0
    """Weight of the cube-to-resting-on-the-platform closeness term."""
    w_success: float = 5.0
    """Weight of the success bonus."""


def default_config() -> PickPlaceConfig:
    return PickPlaceConfig()


class PickPlace(Task):
    name = "pick_place"
    obs_shapes: ClassVar[dict[str, tuple[int, ...]]] = {
        "cube_pos": (3,),
        "cube_quat": (4,),
        "goal_pos": (3,),
    }
    config: PickPlaceConfig

    def build(self, spec: mujoco.MjSpec) -> None:
        c = self.config
        add_cube(spec, "cube", c.cube_half, c.cube_mass, [0.85, 0.6, 0.1, 1])
        body = spec.worldbody.add_body(name="platform", pos=[0.5, 0.15, c.platform_half[2]])
        body.mocap = True  # moved per episode without a joint
        body.add_geom(
            name="platform",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=list(c.platform_half),
            rgba=[0.1, 0.7, 0.3, 1],
            contype=COLLIDE_WORLD,
            conaffinity=COLLIDE_ROBOT | COLLIDE_WORLD,
        )

    def bind(self, model: mujoco.MjModel, robot: RobotIds) -> None:
        self.cube = FreeBody.lookup(model, "cube")
        self.platform_geom = model.geom("platform").id
        self.mocap = int(model.body_mocapid[model.body("platform").id])
        self.pads = robot.pads
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
        for _ in range(100):
            cube_xy = rng.uniform(c.region_low, c.region_high)
            plat_xy = rng.uniform(c.region_low, c.region_high)
            if np.hypot(*(cube_xy - plat_xy)) >= c.min_separation:
                break
        self.half = half = float(model.geom_size[self.cube.geom, 2])
        self.cube.place(data, np.array([cube_xy[0], cube_xy[1], half]))
        top = 2.0 * c.platform_half[2]
        data.mocap_pos[self.mocap] = (plat_xy[0], plat_xy[1], c.platform_half[2])
        self.goal = np.array([plat_xy[0], plat_xy[1], top + half])  # cube centre when placed
        return {"cube_xy": [float(v) for v in cube_xy], "platform_xy": [float(v) for v in plat_xy]}

    def observe(self, data: mujoco.MjData, obs: dict[str, np.ndarray]) -> None:
        obs["cube_pos"] = self.cube.pos(data).astype(np.float32)
        obs["cube_quat"] = self.cube.quat(data).astype(np.float32)
        obs["goal_pos"] = self.goal.astype(np.float32)

    def evaluate(
        self, data: mujoco.MjData, obs: dict[str, np.ndarray]
    ) -> tuple[dict[str, float], bool]:
        c = self.config
        cube = self.cube.pos(data)
        tcp = data.site_xpos[self._tcp]
        held = grasped(data, self.pads, self.cube.geom)
        xy_err = float(np.hypot(cube[0] - self.goal[0], cube[1] - self.goal[1]))
        z_err = float(cube[2] - self.goal[2])
        released = not (
            touching(data, self.pads[0], self.cube.geom)
            or touching(data, self.pads[1], self.cube.geom)
        )
        success = xy_err < c.success_radius and abs(z_err) < c.rest_tolerance and released
        above = self.goal + np.array([0.0, 0.0, 0.05])
        terms = {
            "reach": c.w_reach * tanh_closeness(float(np.linalg.norm(tcp - cube)), 10.0),
            "grasp": c.w_grasp * float(held),
            "transport": c.w_transport
            * tanh_closeness(float(np.linalg.norm(cube - above)), 5.0)
            * float(held or xy_err < c.success_radius),
            "place": c.w_place * tanh_closeness(float(np.linalg.norm(cube - self.goal)), 10.0),
            "success": c.w_success * float(success),
        }
        return terms, success
