"""The flywheel-arm7 robot: a 7-DoF arm with a parallel gripper, built from primitives.

The kinematic chain copies the Franka Panda's link offsets and joint limits, so reach,
workspace and the feel of the motions match the arm most labs own, but every shape is a
capsule, cylinder or box: no meshes to ship, and nothing for the collision detector to chew
on. Only the hand and the finger pads collide (with task objects and the table); the arm links
are visual only, which keeps the contact count, and so the step cost, small.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

ROBOT_NAME = "flywheel-arm7"

# Panda link frames: (parent-relative position, parent-relative quaternion wxyz).
_S = float(np.sqrt(0.5))
_LINKS: tuple[tuple[tuple[float, float, float], tuple[float, float, float, float]], ...] = (
    ((0.0, 0.0, 0.333), (1.0, 0.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (_S, -_S, 0.0, 0.0)),
    ((0.0, -0.316, 0.0), (_S, _S, 0.0, 0.0)),
    ((0.0825, 0.0, 0.0), (_S, _S, 0.0, 0.0)),
    ((-0.0825, 0.384, 0.0), (_S, -_S, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (_S, _S, 0.0, 0.0)),
    ((0.088, 0.0, 0.0), (_S, _S, 0.0, 0.0)),
)
_RANGES = (
    (-2.8973, 2.8973),
    (-1.7628, 1.7628),
    (-2.8973, 2.8973),
    (-3.0718, -0.0698),
    (-2.8973, 2.8973),
    (-0.0175, 3.7525),
    (-2.8973, 2.8973),
)
# Visual capsules per link, in the link frame: (from, to, radius).
_SHAPES = (
    ((0, 0, -0.19), (0, 0, 0.0), 0.06),
    ((0, 0, -0.06), (0, -0.20, 0.0), 0.06),
    ((0, 0, -0.12), (0.08, 0, 0.0), 0.055),
    ((0, 0, 0.0), (-0.08, 0.10, 0.0), 0.055),
    ((0, 0.0, -0.22), (0, 0.07, 0.0), 0.05),
    ((0, 0, 0.0), (0.08, 0, 0.0), 0.045),
    ((0, 0, -0.01), (0, 0, 0.08), 0.04),
)

_WRIST_POS = (0.06, 0.0, 0.065)  # wrist camera, hand frame: beside and below the hand box
_WRIST_TARGET = (0.0, 0.0, 0.16)  # it looks at a point past the fingertips


def _wrist_quat() -> np.ndarray:
    """Wrist camera orientation (wxyz, hand frame): looking at _WRIST_TARGET, jaw horizontal."""
    back = np.subtract(_WRIST_POS, _WRIST_TARGET)
    back /= np.linalg.norm(back)
    right = np.cross([1.0, 0.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.stack([right, up, back], axis=1).reshape(-1))
    return quat


FINGER_OPEN = 0.04
"""Finger travel in metres; both fingers open by this much, so the jaw opens to 8 cm."""


@dataclass(frozen=True, kw_only=True)
class RobotConfig:
    """Physical parameters of the arm; the defaults are Panda-like."""

    base_pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """World position of the arm's base (the table top is z = 0)."""
    home_qpos: tuple[float, ...] = (0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.0)
    """Joint angles (rad) at reset: hand pointing straight down above the table centre."""
    kp: tuple[float, ...] = (4500.0, 4500.0, 3500.0, 3500.0, 2000.0, 2000.0, 2000.0)
    """Joint position-servo stiffness (N m / rad), as on the Panda menagerie model."""
    armature: float = 0.1
    """Reflected rotor inertia per joint (kg m^2); stabilises stiff servos at a 5 ms step."""
    joint_damping: float = 1.0
    """Passive joint damping (N m s / rad)."""
    finger_kp: float = 1000.0
    """Finger servo stiffness (N / m); with finger_force it sets how hard the jaw squeezes."""
    finger_force: float = 20.0
    """Maximum force per finger (N)."""
    finger_armature: float = 0.1
    """Reflected inertia of each finger drive (kg); makes pad contacts stiff and stable."""
    finger_friction: tuple[float, float, float] = (1.5, 0.01, 0.001)
    """Sliding, torsional and rolling friction of the finger pads."""
    link_density: float = 600.0
    """Density of the visual link capsules (kg / m^3), giving Panda-like link masses."""


@dataclass(frozen=True, kw_only=True)
class RobotNames:
    """Names of the robot's elements in the compiled model, for id lookups."""

    joints: tuple[str, ...] = tuple(f"joint{i + 1}" for i in range(7))
    fingers: tuple[str, str] = ("finger_left", "finger_right")
    arm_actuators: tuple[str, ...] = tuple(f"act{i + 1}" for i in range(7))
    gripper_actuators: tuple[str, str] = ("grip_left", "grip_right")
    tcp_site: str = "tcp"
    hand_body: str = "hand"
    pad_geoms: tuple[str, str] = ("pad_left", "pad_right")
    hand_geom: str = "hand_box"
    wrist_camera: str = "wrist"


NAMES = RobotNames()


@dataclass
class RobotIds:
    """Integer ids and address slices of the robot in a compiled model."""

    qpos: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (7,)
    dof: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (7,)
    finger_qpos: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (2,)
    finger_dof: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (2,)
    arm_act: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (7,)
    gripper_act: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (2,)
    tcp: int = -1
    hand: int = -1
    pads: tuple[int, int] = (-1, -1)
    hand_geom: int = -1
    wrist_cam: int = -1

    @classmethod
    def lookup(cls, model: mujoco.MjModel) -> RobotIds:
        jid = [model.joint(n).id for n in NAMES.joints]
        fid = [model.joint(n).id for n in NAMES.fingers]
        return cls(
            qpos=np.array([model.jnt_qposadr[j] for j in jid]),
            dof=np.array([model.jnt_dofadr[j] for j in jid]),
            finger_qpos=np.array([model.jnt_qposadr[j] for j in fid]),
            finger_dof=np.array([model.jnt_dofadr[j] for j in fid]),
            arm_act=np.array([model.actuator(n).id for n in NAMES.arm_actuators]),
            gripper_act=np.array([model.actuator(n).id for n in NAMES.gripper_actuators]),
            tcp=model.site(NAMES.tcp_site).id,
            hand=model.body(NAMES.hand_body).id,
            pads=(model.geom(NAMES.pad_geoms[0]).id, model.geom(NAMES.pad_geoms[1]).id),
            hand_geom=model.geom(NAMES.hand_geom).id,
            wrist_cam=model.camera(NAMES.wrist_camera).id,
        )


# Collision bits: arm links collide with nothing; hand and pads hit objects and the table.
COLLIDE_ROBOT = 1
COLLIDE_WORLD = 2


def add_robot(spec: mujoco.MjSpec, config: RobotConfig | None = None) -> None:
    """Add the arm, gripper, servos and wrist camera to `spec` under its world body."""
    cfg = config or RobotConfig()
    spec.compiler.degree = False  # joint ranges below are radians (MjSpec defaults to degrees)
    base = spec.worldbody.add_body(name="base", pos=list(cfg.base_pos))
    base.add_geom(
        type=mujoco.mjtGeom.mjGEOM_CYLINDER,
        size=[0.08, 0.05, 0],
        pos=[0, 0, 0.05],
        rgba=[0.25, 0.25, 0.28, 1],
        contype=0,
        conaffinity=0,
    )
    parent = base
    for i, ((pos, quat), rng, (p0, p1, rad)) in enumerate(
        zip(_LINKS, _RANGES, _SHAPES, strict=True)
    ):
        body = parent.add_body(name=f"link{i + 1}", pos=list(pos), quat=list(quat))
        body.gravcomp = 1.0  # servos need only track, not fight gravity
        body.add_joint(
            name=NAMES.joints[i],
            type=mujoco.mjtJoint.mjJNT_HINGE,
            axis=[0, 0, 1],
            range=list(rng),
            armature=cfg.armature,
            damping=cfg.joint_damping,
        )
        body.add_geom(
            type=mujoco.mjtGeom.mjGEOM_CAPSULE,
            fromto=[*p0, *p1],
            size=[rad, 0, 0],
            density=cfg.link_density,
            rgba=[0.92, 0.92, 0.94, 1] if i % 2 == 0 else [0.3, 0.3, 0.33, 1],
            contype=0,
            conaffinity=0,
        )
        parent = body
    _add_hand(parent, cfg)
    _add_actuators(spec, cfg)


def _add_hand(link7: mujoco.MjsBody, cfg: RobotConfig) -> None:
    """Hand at the flange; fingers slide along the hand's y axis, pads face each other."""
    # Turned 90 deg about the flange so that at home the jaw closes along world x.
    hand = link7.add_body(name=NAMES.hand_body, pos=[0, 0, 0.107], quat=[_S, 0, 0, _S])
    hand.gravcomp = 1.0
    hand.add_geom(
        name=NAMES.hand_geom,
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[0.025, 0.09, 0.025],
        pos=[0, 0, 0.03],
        mass=0.7,
        rgba=[0.92, 0.92, 0.94, 1],
        contype=COLLIDE_ROBOT,
        conaffinity=COLLIDE_WORLD,
    )
    hand.add_site(name=NAMES.tcp_site, pos=[0, 0, 0.1], size=[0.005, 0, 0], rgba=[1, 0, 0, 0])
    # Wrist camera behind the fingers, looking down the hand's z axis (towards the jaw).
    hand.add_camera(
        name=NAMES.wrist_camera, pos=list(_WRIST_POS), quat=list(_wrist_quat()), fovy=70.0
    )
    for name, pad, sign in zip(NAMES.fingers, NAMES.pad_geoms, (1.0, -1.0), strict=True):
        finger = hand.add_body(name=name, pos=[0, 0, 0.055])
        finger.gravcomp = 1.0
        finger.add_joint(
            name=name,
            type=mujoco.mjtJoint.mjJNT_SLIDE,
            axis=[0, sign, 0],
            range=[0.0, FINGER_OPEN],
            armature=cfg.finger_armature,
            damping=2.0,
        )
        finger.add_geom(
            name=pad,
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.012, 0.006, 0.026],
            pos=[0, sign * 0.006, 0.042],
            mass=0.05,
            friction=list(cfg.finger_friction),
            condim=4,
            # Stiffest safe contact (timeconst = 2 x timestep): light fingers under a 20 N
            # servo otherwise sink ~5 mm into what they hold.
            solref=[0.01, 1.0],
            solimp=[0.95, 0.99, 0.001, 0.5, 2.0],
            rgba=[0.2, 0.2, 0.22, 1],
            contype=COLLIDE_ROBOT,
            conaffinity=COLLIDE_WORLD,
        )


def _add_actuators(spec: mujoco.MjSpec, cfg: RobotConfig) -> None:
    """Critically damped joint position servos and the two finger servos."""
    for i, (kp, rng) in enumerate(zip(cfg.kp, _RANGES, strict=True)):
        act = spec.add_actuator(
            name=NAMES.arm_actuators[i],
            target=NAMES.joints[i],
            trntype=mujoco.mjtTrn.mjTRN_JOINT,
        )
        act.set_to_position(kp=kp, dampratio=1.0)
        act.ctrlrange = list(rng)
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
    # One servo per finger, both always given the same target: stiffer than an equality
    # coupling at a 5 ms step, and a jaw closing on an off-centre object still centres it.
    for finger, act_name in zip(NAMES.fingers, NAMES.gripper_actuators, strict=True):
        grip = spec.add_actuator(name=act_name, target=finger, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        grip.set_to_position(kp=cfg.finger_kp, dampratio=1.0)
        grip.ctrlrange = [0.0, FINGER_OPEN]
        grip.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        grip.forcerange = [-cfg.finger_force, cfg.finger_force]
        grip.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
