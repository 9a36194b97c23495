"""The shared scene: physics options, table, light, front camera and the robot.

Every task starts from `new_spec` and adds its own objects, so all tasks share one robot,
one camera layout and one set of solver settings; only the props differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from sim.robot import COLLIDE_ROBOT, COLLIDE_WORLD, RobotConfig, add_robot

FRONT_CAMERA = "front"
WRIST_CAMERA = "wrist"
CAMERAS = (FRONT_CAMERA, WRIST_CAMERA)
"""Camera names every scene has, in a fixed order."""


@dataclass(frozen=True, kw_only=True)
class SceneConfig:
    """Solver and rendering settings shared by every task."""

    timestep: float = 0.005
    """Physics step (s). 5 ms keeps stiff servos and box grasps stable with implicitfast."""
    max_image_size: int = 256
    """Offscreen buffer edge (px); cameras can render at any size up to this."""
    front_camera_pos: tuple[float, float, float] = (0.95, 0.0, 0.7)
    """Front camera position (m): facing the robot across the table."""
    front_camera_target: tuple[float, float, float] = (0.42, 0.0, 0.08)
    """Point the front camera looks at (m)."""
    front_camera_fovy: float = 55.0
    """Front camera vertical field of view (deg)."""
    table_friction: float = 0.5
    """Sliding friction of the table top."""


def look_at_quat(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Quaternion (wxyz) of a MuJoCo camera at `pos` looking at `target`, world z up.

    MuJoCo cameras look along their local -z with +y up, so the camera frame's columns are
    (right, up, backwards).
    """
    back = np.asarray(pos, float) - np.asarray(target, float)
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    mat = np.stack([right, up, back], axis=1)  # (3, 3)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.reshape(-1))
    return quat


def new_spec(robot: RobotConfig | None = None, scene: SceneConfig | None = None) -> mujoco.MjSpec:
    """A spec with the table, light, front camera and robot; tasks add their props to it."""
    cfg = scene or SceneConfig()
    spec = mujoco.MjSpec()
    spec.modelname = "flywheel"
    spec.compiler.degree = False
    spec.nuserdata = 3  # the controller's TCP target, so it is saved with the MuJoCo state
    spec.option.timestep = cfg.timestep
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_PYRAMIDAL
    spec.visual.quality.shadowsize = 0  # shadows cost more than the whole primitive scene
    spec.visual.quality.offsamples = 0
    spec.visual.global_.offwidth = cfg.max_image_size
    spec.visual.global_.offheight = cfg.max_image_size
    spec.visual.headlight.ambient = [0.4, 0.4, 0.4]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]
    spec.visual.headlight.specular = [0.0, 0.0, 0.0]  # no glare blob in the wrist view
    world = spec.worldbody
    world.add_light(
        pos=[0.5, 0.0, 1.5], dir=[0, 0, -1], diffuse=[0.6, 0.6, 0.6], specular=[0.1, 0.1, 0.1]
    )
    # The table top is the z = 0 plane: a plane contact is the cheapest there is.
    world.add_geom(
        name="table",
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[0.9, 0.9, 0.05],
        pos=[0.35, 0, 0],
        rgba=[0.55, 0.45, 0.35, 1],
        friction=[cfg.table_friction, 0.005, 0.0001],
        contype=COLLIDE_WORLD,
        conaffinity=COLLIDE_ROBOT | COLLIDE_WORLD,
    )
    world.add_camera(
        name=FRONT_CAMERA,
        pos=list(cfg.front_camera_pos),
        quat=list(look_at_quat(np.array(cfg.front_camera_pos), np.array(cfg.front_camera_target))),
        fovy=cfg.front_camera_fovy,
    )
    add_robot(spec, robot)
    return spec


def add_marker(spec: mujoco.MjSpec, name: str, size: float, rgba: list[float]) -> None:
    """A mocap-free visual goal marker: a non-colliding sphere the task moves via site_pos."""
    spec.worldbody.add_site(
        name=name, type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[size, 0, 0], rgba=rgba
    )
