"""What every task provides, and the prop helpers the tasks share.

A task owns its props (added to the shared scene spec), their per-episode randomisation, its
task observations, its dense reward terms and its sparse success test. The env does the rest
(robot, control, cameras, time limit, domain randomisation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import mujoco
import numpy as np

from sim.robot import COLLIDE_ROBOT, COLLIDE_WORLD, RobotIds


@dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """Settings every task has."""

    max_steps: int = 100
    """Time limit in control steps; the episode is truncated after this many."""
    terminate_on_success: bool = True
    """End the episode (terminated=True) on the first step the success test passes."""


class Task(ABC):
    """One manipulation task; subclasses live one per module in sim/tasks/."""

    name: ClassVar[str]
    """Registry key, e.g. "lift"."""
    obs_shapes: ClassVar[dict[str, tuple[int, ...]]]
    """Task observation keys and shapes (float32), added to the robot's."""

    def __init__(self, config: TaskConfig) -> None:
        self.config = config

    @abstractmethod
    def build(self, spec: mujoco.MjSpec) -> None:
        """Add the task's props to the scene spec."""

    @abstractmethod
    def bind(self, model: mujoco.MjModel, robot: RobotIds) -> None:
        """Look up ids in the compiled model."""

    @abstractmethod
    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> dict:
        """Place the props for a new episode; return the sampled layout (JSON-ready)."""

    @abstractmethod
    def observe(self, data: mujoco.MjData, obs: dict[str, np.ndarray]) -> None:
        """Write the task observations into `obs`."""

    @abstractmethod
    def evaluate(
        self, data: mujoco.MjData, obs: dict[str, np.ndarray]
    ) -> tuple[dict[str, float], bool]:
        """Return (scaled dense reward terms, success) for the current state."""

    def variable_parts(self, model: mujoco.MjModel) -> dict[str, list[int]]:
        """Bodies/geoms the domain-randomisation knobs act on: keys mass_bodies, size_geoms,
        friction_geoms. Default: nothing task-specific."""
        return {"mass_bodies": [], "size_geoms": [], "friction_geoms": []}


# ----------------------------------------------------------------------------- props


def add_cube(spec: mujoco.MjSpec, name: str, half: float, mass: float, rgba: list[float]) -> None:
    """A free-floating box the gripper can grasp; its geom is named like its body."""
    body = spec.worldbody.add_body(name=name, pos=[0.5, 0.0, half])
    body.add_freejoint(name=name)
    body.add_geom(
        name=name,
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[half, half, half],
        mass=mass,
        rgba=rgba,
        friction=[0.6, 0.005, 0.0001],  # low enough that a push below the middle slides it
        contype=COLLIDE_WORLD,
        conaffinity=COLLIDE_ROBOT | COLLIDE_WORLD,
    )


def add_goal_marker(
    spec: mujoco.MjSpec, name: str, geom_type: mujoco.mjtGeom, size: list[float], rgba: list[float]
) -> None:
    """A visual-only goal marker on a mocap body: its pose is part of the MuJoCo state, so a
    stored state re-renders with the goal where it was."""
    body = spec.worldbody.add_body(name=name, pos=[0.5, 0.0, 0.0])
    body.mocap = True
    body.add_geom(type=geom_type, size=size, rgba=rgba, contype=0, conaffinity=0)


@dataclass
class FreeBody:
    """Ids of a free-jointed prop: where its pose lives in qpos/qvel."""

    body: int
    geom: int
    qpos: int
    dof: int

    @classmethod
    def lookup(cls, model: mujoco.MjModel, name: str) -> FreeBody:
        joint = model.joint(name).id
        return cls(
            body=model.body(name).id,
            geom=model.geom(name).id,
            qpos=int(model.jnt_qposadr[joint]),
            dof=int(model.jnt_dofadr[joint]),
        )

    def place(self, data: mujoco.MjData, pos: np.ndarray, yaw: float = 0.0) -> None:
        """Set position and yaw, zero velocity."""
        data.qpos[self.qpos : self.qpos + 3] = pos
        data.qpos[self.qpos + 3 : self.qpos + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        data.qvel[self.dof : self.dof + 6] = 0.0

    def pos(self, data: mujoco.MjData) -> np.ndarray:
        return data.qpos[self.qpos : self.qpos + 3]

    def quat(self, data: mujoco.MjData) -> np.ndarray:
        return data.qpos[self.qpos + 3 : self.qpos + 7]


def contact_pairs(data: mujoco.MjData) -> list[list[int]]:
    """Geom id pairs of the current contacts (a short list: plain Python beats numpy here)."""
    n = data.ncon
    return data.contact.geom[:n].tolist() if n else []


def touching(data: mujoco.MjData, geom_a: int, geom_b: int) -> bool:
    """Whether the two geoms are in contact right now."""
    return any(
        (g1 == geom_a and g2 == geom_b) or (g1 == geom_b and g2 == geom_a)
        for g1, g2 in contact_pairs(data)
    )


def grasped(data: mujoco.MjData, pads: tuple[int, int], geom: int) -> bool:
    """Both finger pads touch `geom`: the definition of a grasp used by every task."""
    touched = {g2 if g1 == geom else g1 for g1, g2 in contact_pairs(data) if geom in (g1, g2)}
    return pads[0] in touched and pads[1] in touched


def tanh_closeness(dist: float, scale: float) -> float:
    """1 at distance 0, falling smoothly towards 0: the usual bounded shaping term."""
    return 1.0 - float(np.tanh(scale * dist))


def sample_xy(
    rng: np.random.Generator, low: tuple[float, float], high: tuple[float, float]
) -> np.ndarray:
    """A uniform point in an axis-aligned rectangle (2,)."""
    return rng.uniform(low, high)
