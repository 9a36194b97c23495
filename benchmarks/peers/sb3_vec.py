"""A batched env (`flywheel.rollout.BatchedEnv`, e.g. `sim.hopper.HopperBatch`) as a
Stable-Baselines3 VecEnv, so SB3 can be timed on the same env as ours: what is left between
the two is the learner and how each runs its envs."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv


class BatchedVecEnv(VecEnv):
    """SB3's autoreset convention over `reset_one` / `step`: a finished env is reset in the
    step that ends it, its last observation in `infos[i]["terminal_observation"]`."""

    def __init__(self, env: Any, seed: int = 0) -> None:
        self.env = env  # before VecEnv's init, which asks it for its render_mode
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None
        self.seed(seed)

    def reset(self) -> np.ndarray:
        obs = []
        for i in range(self.num_envs):
            o, self.reset_infos[i] = self.env.reset_one(i, seed=self._seeds[i], options=self._options[i] or None)  # fmt: skip
            obs.append(o)
        self._reset_seeds()
        self._reset_options()
        return np.stack(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, reward, term, trunc = self.env.step(self._actions)
        dones = term | trunc
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            infos[i] = {"terminal_observation": obs[i].copy(), "TimeLimit.truncated": bool(trunc[i] and not term[i])}  # fmt: skip
            obs[i] = self.env.reset_one(int(i))[0]
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self.env.close()

    # The envs are one object: an attribute or method is the batch's, shared by every index.
    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.env, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:  # fmt: skip
        """Called once on the batch; its result stands for every index asked."""
        return [getattr(self.env, method_name)(*args, **kwargs)] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))
