"""flywheel's MuJoCo simulator: a Panda-proportioned 7-DoF arm and five tabletop tasks.

Importing `sim` registers the Gymnasium ids `flywheel/<Task>-v0` (Reach, Push, Lift,
PickPlace, Drawer), e.g. `gymnasium.make("flywheel/Lift-v0", cameras=("front",))` or
`gymnasium.make_vec("flywheel/Lift-v0", num_envs=8)` (a SimVectorEnv). See docs/sim.md.
"""

from __future__ import annotations

import os

# The GL backend is fixed when mujoco is first imported: default to headless EGL.
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym

from sim.env import ROBOT_OBS, EnvConfig, FlywheelEnv
from sim.experts import DEFAULT_NOISE, EXPERTS, BatchExpert, make_expert
from sim.robot import ROBOT_NAME
from sim.tasks import TASKS, default_config, make_task
from sim.variation import VARIATIONS, Variation
from sim.vector import SimVectorEnv

GYM_IDS: dict[str, str] = {
    "reach": "flywheel/Reach-v0",
    "push": "flywheel/Push-v0",
    "lift": "flywheel/Lift-v0",
    "pick_place": "flywheel/PickPlace-v0",
    "drawer": "flywheel/Drawer-v0",
}
"""Gymnasium id per task name."""


def _register() -> None:
    for task, env_id in GYM_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="sim.env:FlywheelEnv",
            vector_entry_point="sim.vector:SimVectorEnv",
            kwargs={"task": task},
            # the env enforces its own time limit (task config max_steps) and reports it as
            # truncated; no TimeLimit wrapper, so there is one source of truth
            max_episode_steps=None,
        )


_register()

__all__ = [
    "DEFAULT_NOISE",
    "EXPERTS",
    "GYM_IDS",
    "ROBOT_NAME",
    "ROBOT_OBS",
    "TASKS",
    "VARIATIONS",
    "BatchExpert",
    "EnvConfig",
    "FlywheelEnv",
    "SimVectorEnv",
    "Variation",
    "default_config",
    "make_expert",
    "make_task",
]
