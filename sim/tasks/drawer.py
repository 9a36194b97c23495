"""Drawer: grasp the handle of a drawer and pull it open.

The cabinet is a static body and the drawer its child on a slide joint, so the two never
collide with each other (parent-child contacts are filtered) and the only contacts are the
jaw on the handle: the drawer costs about as much to simulate as a cube. The cabinet's pose
(position on the table and yaw) is drawn per episode, so the drawer does not always pull
straight towards the robot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import mujoco
import numpy as np

from sim.robot import COLLIDE_ROBOT, COLLIDE_WORLD, RobotIds
from sim.tasks.base import Task, TaskConfig, grasped, tanh_closeness

_HALF = (0.12, 0.16, 0.055)  # cabinet half sizes (m): top at 0.11
_HANDLE_OUT = 0.08  # handle bar distance in front of the drawer face (m): room for the jaw
_HANDLE_Z = 0.08  # handle height above the table (m)


@dataclass(frozen=True, kw_only=True)
class DrawerConfig(TaskConfig):
    """Drawer task settings."""

    max_steps: int = 100
    """Time limit (control steps): 5 s at 20 Hz."""
    handle_low: tuple[float, float] = (0.46, -0.15)
    """Lower corner (x, y) of the closed drawer's handle position (m)."""
    handle_high: tuple[float, float] = (0.56, 0.15)
    """Upper corner (x, y) of the closed drawer's handle position (m)."""
    cabinet_yaw: float = 0.3
    """The cabinet's yaw is drawn from [-cabinet_yaw, cabinet_yaw] (rad) about the closed
    handle's centre: the drawer then slides up to 17 degrees off the robot's x axis, and the
    handle bar sits that far off square to the jaw (which still closes across it)."""
    initial_opening: tuple[float, float] = (0.0, 0.02)
    """Range of the drawer's opening at reset (m)."""
    travel: float = 0.2
    """The drawer's range: maximum opening (m), the slide joint's upper limit."""
    open_fraction: float = 0.8
    """Success once the drawer is open at least this fraction of `travel` (0.16 m at the
    defaults), as the task definition asks."""
    drawer_mass: float = 0.5
    """Drawer mass (kg)."""
    slide_damping: float = 5.0
    """Viscous damping of the slide (N s / m): the drawer does not coast."""
    slide_friction: float = 1.0
    """Dry friction of the slide (N)."""
    w_reach: float = 1.0
    """Weight of the TCP-to-handle closeness term."""
    w_grasp: float = 0.5
    """Weight of the both-pads-touch-the-handle term."""
    w_open: float = 2.0
    """Weight of the opened-fraction term."""
    w_success: float = 5.0
    """Weight of the success bonus."""


def default_config() -> DrawerConfig:
    return DrawerConfig()


class Drawer(Task):
    name = "drawer"
    obs_shapes: ClassVar[dict[str, tuple[int, ...]]] = {"handle_pos": (3,), "drawer_opening": (1,)}
    config: DrawerConfig

    def build(self, spec: mujoco.MjSpec) -> None:
        c = self.config
        hx, hy, hz = _HALF
        collide = {"contype": COLLIDE_WORLD, "conaffinity": COLLIDE_ROBOT}
        cab = spec.worldbody.add_body(name="cabinet", pos=[0.7, 0.0, hz])
        cab.mocap = True  # placed per episode without a joint
        cab.add_geom(
            name="cabinet",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[hx, hy, hz],
            rgba=[0.45, 0.35, 0.3, 1],
            **collide,
        )
        drawer = cab.add_body(name="drawer", pos=[0, 0, 0])
        drawer.add_joint(
            name="drawer",
            type=mujoco.mjtJoint.mjJNT_SLIDE,
            axis=[-1, 0, 0],
            range=[0.0, c.travel],
            damping=c.slide_damping,
            frictionloss=c.slide_friction,
        )
        drawer.add_geom(
            name="drawer_front",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.01, hy - 0.02, hz - 0.012],
            pos=[-hx - 0.01, 0, 0.0],
            mass=c.drawer_mass * 0.4,
            rgba=[0.6, 0.5, 0.4, 1],
            **collide,
        )
        drawer.add_geom(  # the tray, hidden inside the cabinet while closed
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[hx - 0.02, hy - 0.03, hz - 0.02],
            pos=[-0.01, 0, 0.0],
            mass=c.drawer_mass * 0.6,
            rgba=[0.55, 0.45, 0.35, 1],
            contype=0,
            conaffinity=0,
        )
        x = -hx - 0.02 - _HANDLE_OUT
        z = _HANDLE_Z - hz
        for y in (-0.05, 0.05):  # posts
            drawer.add_geom(
                type=mujoco.mjtGeom.mjGEOM_CAPSULE,
                fromto=[x, y, z, -hx - 0.02, y, z],
                size=[0.006, 0, 0],
                mass=0.01,
                rgba=[0.7, 0.7, 0.72, 1],
                contype=0,
                conaffinity=0,
            )
        drawer.add_geom(
            name="handle",
            type=mujoco.mjtGeom.mjGEOM_CAPSULE,
            fromto=[x, -0.06, z, x, 0.06, z],
            size=[0.01, 0, 0],
            mass=0.02,
            friction=[1.0, 0.005, 0.0001],
            rgba=[0.75, 0.75, 0.78, 1],
            **collide,
        )

    @property
    def open_target(self) -> float:
        """Opening (m) that counts as open: `open_fraction` of the joint's range."""
        return self.config.open_fraction * self.config.travel

    def bind(self, model: mujoco.MjModel, robot: RobotIds) -> None:
        joint = model.joint("drawer").id
        self.qpos = int(model.jnt_qposadr[joint])
        self.dof = int(model.jnt_dofadr[joint])
        self.mocap = int(model.body_mocapid[model.body("cabinet").id])
        self.handle = model.geom("handle").id
        self.pads = robot.pads
        self._tcp = robot.tcp

    def variable_parts(self, model: mujoco.MjModel) -> dict[str, list[int]]:
        return {
            "mass_bodies": [model.body("drawer").id],
            "size_geoms": [],
            "friction_geoms": [self.handle],
        }

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> dict:
        c = self.config
        handle = rng.uniform(c.handle_low, c.handle_high)
        yaw = float(rng.uniform(-c.cabinet_yaw, c.cabinet_yaw))
        opening = float(rng.uniform(*c.initial_opening))
        # cabinet centre from the closed handle position: behind it along the drawer's axis
        back = _HALF[0] + 0.02 + _HANDLE_OUT
        data.mocap_pos[self.mocap] = (
            handle[0] + back * np.cos(yaw),
            handle[1] + back * np.sin(yaw),
            _HALF[2],
        )
        data.mocap_quat[self.mocap] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        data.qpos[self.qpos] = opening
        return {
            "handle_xy": [float(v) for v in handle],
            "cabinet_yaw": yaw,
            "initial_opening": opening,
        }

    def observe(self, data: mujoco.MjData, obs: dict[str, np.ndarray]) -> None:
        obs["handle_pos"] = data.geom_xpos[self.handle].astype(np.float32)
        obs["drawer_opening"] = np.array([data.qpos[self.qpos]], np.float32)

    def evaluate(
        self, data: mujoco.MjData, obs: dict[str, np.ndarray]
    ) -> tuple[dict[str, float], bool]:
        c = self.config
        target = self.open_target
        opening = float(data.qpos[self.qpos])
        dist = float(np.linalg.norm(data.site_xpos[self._tcp] - data.geom_xpos[self.handle]))
        success = opening >= target
        return {
            "reach": c.w_reach * tanh_closeness(dist, 10.0),
            "grasp": c.w_grasp * float(grasped(data, self.pads, self.handle)),
            "open": c.w_open * float(np.clip(opening / target, 0.0, 1.0)),
            "success": c.w_success * float(success),
        }, success
