"""Gymnasium's Hopper-v5, N copies behind one batched step.

Online RL on Hopper is bound by the env: `gym.make("Hopper-v5").step` costs ~350 us here, of
which the physics (4 MuJoCo steps) is ~150 us; the rest is Python in the env and its wrappers,
paid per env per step. `HopperBatch` keeps the physics per env (one `mj_step(nstep=4)` call
each) and does everything else (observation, reward, health, time limit) once for the whole
batch in NumPy. It is the same MDP, step for step: same model file, defaults, reset noise and
seeding (tests/sim/test_hopper.py compares it with Gymnasium's env on the same seeds and
actions).

`HopperV5()` is the env factory to hand to `refine`, `evaluate` or `EnvPool`: called, it makes
Gymnasium's own env (for anything that wants one env); `batched(n)` makes a `HopperBatch`,
which `EnvPool` uses when all its envs come from one such factory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.utils import seeding

ENV_ID = "Hopper-v5"


@dataclass(frozen=True)
class HopperConfig:
    """Hopper-v5's constructor defaults (Gymnasium 1.x), the MDP this module reproduces."""

    frame_skip: int = 4
    forward_reward_weight: float = 1.0
    ctrl_cost_weight: float = 1e-3
    healthy_reward: float = 1.0
    healthy_state_range: tuple[float, float] = (-100.0, 100.0)
    healthy_z_range: tuple[float, float] = (0.7, float("inf"))
    healthy_angle_range: tuple[float, float] = (-0.2, 0.2)
    reset_noise_scale: float = 5e-3
    max_episode_steps: int = 1000
    """Gymnasium's registered TimeLimit."""


def model_path() -> Path:
    """Gymnasium's own hopper.xml, so the physics is the installed Hopper-v5's."""
    import gymnasium.envs.mujoco as gm

    return Path(gm.__file__).parent / "assets" / "hopper.xml"


def _observe(qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Hopper-v5's observation of one env (1-D) or a batch (2-D): qpos without x, then qvel
    clipped to [-10, 10]."""
    return np.concatenate([qpos[..., 1:], np.clip(qvel, -10, 10)], axis=-1)


class HopperBatch:
    """`num_envs` Hopper-v5 envs. No autoreset: `step` reports terminated/truncated per env
    and the caller resets finished ones with `reset_one` (`flywheel.rollout.EnvPool` does).

    Observations are (N, 11) float64, as Gymnasium's: qpos without x, then qvel clipped to
    [-10, 10]. A finished env must be reset before it is stepped again.
    """

    def __init__(self, num_envs: int, config: HopperConfig | None = None) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, not {num_envs}")
        self.config = cfg = config or HopperConfig()
        self.num_envs, self.render_mode = num_envs, None
        self.model = mujoco.MjModel.from_xml_path(str(model_path()))
        self.datas = [mujoco.MjData(self.model) for _ in range(num_envs)]
        first = self.datas[0]
        self.init_qpos, self.init_qvel = first.qpos.copy(), first.qvel.copy()
        self.dt = self.model.opt.timestep * cfg.frame_skip
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (self.model.nq - 1 + self.model.nv,), np.float64)  # fmt: skip
        lo, hi = self.model.actuator_ctrlrange.T.astype(np.float32)
        self.single_action_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        self._qpos = np.zeros((num_envs, self.model.nq))
        self._qvel = np.zeros((num_envs, self.model.nv))
        self._elapsed = np.zeros(num_envs, np.int64)
        self._rngs: list[np.random.Generator | None] = [None] * num_envs  # None: not reset yet
        self._closed = False

    def reset_one(self, i: int, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
        """Env `i`'s new episode, as `gym.make("Hopper-v5").reset(seed=seed)` would start it:
        a seed re-seeds that env's generator, None continues it."""
        if seed is not None or self._rngs[i] is None:
            self._rngs[i] = seeding.np_random(seed)[0]
        rng, d, cfg = self._rngs[i], self.datas[i], self.config
        mujoco.mj_resetData(self.model, d)
        s = cfg.reset_noise_scale
        d.qpos[:] = self.init_qpos + rng.uniform(low=-s, high=s, size=self.model.nq)
        d.qvel[:] = self.init_qvel + rng.uniform(low=-s, high=s, size=self.model.nv)
        mujoco.mj_forward(self.model, d)
        self._qpos[i], self._qvel[i], self._elapsed[i] = d.qpos, d.qvel, 0
        obs = _observe(self._qpos[i], self._qvel[i])
        info = {"x_position": d.qpos[0], "z_distance_from_origin": d.qpos[1] - self.init_qpos[1]}
        return obs, info

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every env with its row of `actions` (N, 3): (obs (N, 11), reward (N,),
        terminated (N,), truncated (N,)), each a new array."""
        cfg, m = self.config, self.model
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs, m.nu):  # Gymnasium refuses a wrong size too
            raise ValueError(f"actions must be ({self.num_envs}, {m.nu}), not {actions.shape}")
        if self._closed or any(r is None for r in self._rngs):
            raise RuntimeError("step after close, or before every env was reset (reset_one)")
        x_before = self._qpos[:, 0].copy()
        for i, d in enumerate(self.datas):
            d.ctrl[:] = actions[i]
            mujoco.mj_step(m, d, nstep=cfg.frame_skip)
            self._qpos[i], self._qvel[i] = d.qpos, d.qvel
        qpos, qvel = self._qpos, self._qvel
        x_velocity = (qpos[:, 0] - x_before) / self.dt
        healthy = self._healthy(qpos, qvel)
        ctrl_cost = cfg.ctrl_cost_weight * np.sum(np.square(actions), axis=1)
        reward = cfg.forward_reward_weight * x_velocity + healthy * cfg.healthy_reward - ctrl_cost
        self._elapsed += 1
        return _observe(qpos, qvel), reward, ~healthy, self._elapsed >= cfg.max_episode_steps

    def _healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """(N,) Hopper-v5's `is_healthy`: every state entry after x and z in the open state
        range, the height and the torso angle in theirs."""
        cfg = self.config
        state = np.concatenate([qpos[:, 2:], qvel], axis=1)
        lo, hi = cfg.healthy_state_range
        z, angle = qpos[:, 1], qpos[:, 2]
        return (
            np.all((lo < state) & (state < hi), axis=1)
            & (cfg.healthy_z_range[0] < z)
            & (z < cfg.healthy_z_range[1])
            & (cfg.healthy_angle_range[0] < angle)
            & (angle < cfg.healthy_angle_range[1])
        )

    def close(self) -> None:
        self._closed = True


@dataclass(frozen=True)
class HopperV5:
    """Env factory for Hopper-v5: `HopperV5()()` is Gymnasium's env, `batched(n)` ours."""

    config: HopperConfig = HopperConfig()

    def __call__(self) -> gym.Env:
        kwargs = {k: v for k, v in asdict(self.config).items() if k != "max_episode_steps"}
        return gym.make(ENV_ID, max_episode_steps=self.config.max_episode_steps, **kwargs)

    def batched(self, n: int) -> HopperBatch:
        return HopperBatch(n, self.config)
