"""SimVectorEnv: many FlywheelEnvs in one process behind one batched step.

Envs are stepped one after another (MuJoCo is single-threaded per model, and at ~300 us per
step the loop overhead is small); what batching buys is one policy call per step for all envs,
which is where a learned policy spends its time. Scale across cores with processes (see
sim.collect), not threads.

Autoreset follows Gymnasium's SAME_STEP mode: when an env finishes, it is reset inside the same
`step`, the returned observation is the new episode's first, and the finished episode's last
observation and info are in info["final_obs"] / info["final_info"]. With autoreset=False the
caller resets finished envs itself with `reset_one` (collection does this to choose seeds).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from sim.env import FlywheelEnv


class SimVectorEnv(gym.vector.VectorEnv):
    """`num_envs` copies of one task; observations are dicts of (num_envs, ...) arrays."""

    def __init__(self, task: str = "lift", num_envs: int = 8, *, autoreset: bool = True, **kwargs):
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        self.envs = [FlywheelEnv(task, **kwargs) for _ in range(num_envs)]
        self.num_envs = num_envs
        self.autoreset = autoreset
        first = self.envs[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(first.observation_space, num_envs)
        self.action_space = batch_space(first.action_space, num_envs)
        self.metadata = {
            **first.metadata,
            "autoreset_mode": AutoresetMode.SAME_STEP if autoreset else AutoresetMode.DISABLED,
        }
        self.render_mode = first.render_mode
        self._obs = {
            k: np.zeros((num_envs, *space.shape), space.dtype)
            for k, space in first.observation_space.spaces.items()
        }  # each (N, *shape)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Reset every env; an int seed gives env i the seed `seed + i`."""
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            obs, info = env.reset(seed=seeds[i], options=options)
            self._put(i, obs)
            infos = self._add_info(infos, info, i)
        return self._batch(), infos

    def reset_one(self, index: int, *, seed: int | None = None, options: dict | None = None):
        """Reset env `index` only; returns its (obs, info) and updates the batched obs."""
        obs, info = self.envs[index].reset(seed=seed, options=options)
        self._put(index, obs)
        return obs, info

    def step(self, actions: np.ndarray):
        actions = np.asarray(actions)  # (N, 4)
        n = self.num_envs
        rewards = np.zeros(n, np.float64)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            obs, rewards[i], terminated[i], truncated[i], info = env.step(actions[i])
            if self.autoreset and (terminated[i] or truncated[i]):
                final_obs, final_info = obs, info
                obs, info = env.reset()
                info = {**info, "final_obs": final_obs, "final_info": final_info}
            self._put(i, obs)
            infos = self._add_info(infos, info, i)
        return self._batch(), rewards, terminated, truncated, infos

    def step_one(self, index: int, action: np.ndarray):
        """Step env `index` only (no autoreset); updates the batched obs. Collection uses this
        to step just the envs that still have an episode to finish."""
        out = self.envs[index].step(action)
        self._put(index, out[0])
        return out

    def observations(self) -> dict[str, np.ndarray]:
        """A copy of the current batched observation, dict of (N, ...) arrays."""
        return self._batch()

    def get_states(self) -> np.ndarray:
        """MuJoCo states of all envs (N, S)."""
        return np.stack([env.get_state() for env in self.envs])

    def render(self):
        return [env.render() for env in self.envs]

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()

    def _put(self, i: int, obs: dict[str, np.ndarray]) -> None:
        for k, buf in self._obs.items():
            buf[i] = obs[k]

    def _batch(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._obs.items()}
