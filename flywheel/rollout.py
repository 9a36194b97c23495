"""Stepping a pool of Gymnasium envs in lockstep with one batched policy call per step.

Used by evaluation, online RL and online-episode recording alike. It owns the episode
bookkeeping (seeds, final observations, success) so that none of them depends on a particular
vector-env autoreset convention; any Gymnasium env with Dict (or Box) observations works.
`EnvPool.segment` runs a whole PPO rollout of one policy snapshot on the pool, so the same code
serves a pool in this process and one in an env worker (`flywheel/workers.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import gymnasium as gym
import numpy as np

from flywheel.policies.numpy_forward import log_prob

if TYPE_CHECKING:  # not imported at run time by env workers, which never build either
    from flywheel.corpus import Episode
    from flywheel.policies.numpy_forward import Behaviour

PolicyFn = Callable[[dict[str, np.ndarray]], np.ndarray]
"""A batched policy: obs {key: (N, ...)} -> actions (N, A)."""

StepResult = tuple[
    dict[str, np.ndarray],  # next observations (a new episode's first for finished envs)
    np.ndarray,  # rewards (N,)
    np.ndarray,  # terminated (N,)
    np.ndarray,  # truncated (N,)
    dict[int, dict[str, np.ndarray]],  # final observations of finished envs, by env index
    "list[EpisodeRecord]",  # finished episodes
]


def as_dict(obs: Any) -> dict[str, np.ndarray]:
    """Box observations become {"state": obs}, so every env looks like a Dict env."""
    return dict(obs) if isinstance(obs, dict) else {"state": np.asarray(obs, dtype=np.float32)}


def success_of(info: dict[str, Any]) -> bool | None:
    """The sparse success signal, under the names envs commonly use."""
    for key in ("success", "is_success"):
        if key in info:
            return bool(info[key])
    return None


@dataclass
class EpisodeRecord:
    """One finished (or running) episode of one env."""

    seed: int | None
    reset_info: dict[str, Any]
    obs: list[dict[str, np.ndarray]] = field(default_factory=list)  # T+1 entries when done
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    success: bool = False
    """True if the success signal was seen at any step."""

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def ret(self) -> float:
        return float(np.sum(self.rewards))

    def to_episode(
        self, *, task: str, robot: str, control_hz: float, source: str, policy_version: str | None
    ) -> Episode:
        """As a corpus episode (images included if the env rendered cameras)."""
        from flywheel.corpus import Episode, EpisodeMeta  # zarr: not needed in env workers

        keys = self.obs[0].keys()
        obs = {k: np.stack([o[k] for o in self.obs]) for k in keys}
        images = {k: v for k, v in obs.items() if v.dtype == np.uint8 and v.ndim >= 3}
        lowdim = {k: v.astype(np.float32) for k, v in obs.items() if k not in images}
        T = self.length
        return Episode(
            obs=lowdim,
            images=images,
            action=np.asarray(self.actions, dtype=np.float32).reshape(T, -1),
            reward=np.asarray(self.rewards, dtype=np.float32),
            terminated=np.asarray(self.terminated, dtype=bool),
            truncated=np.asarray(self.truncated, dtype=bool),
            timestamp=np.arange(T + 1) / control_hz,
            meta=EpisodeMeta(
                source=source,  # type: ignore[arg-type]
                task=task,
                robot=robot,
                control_hz=control_hz,
                success=self.success,
                policy_version=policy_version,
                info={"seed": self.seed, "randomisation": self.reset_info.get("randomisation")},
            ),
        )


class BatchedEnv(Protocol):
    """N envs behind one step, written batched (e.g. `sim.hopper.HopperBatch`): Python per step
    once for the batch, not once per env. No autoreset; `EnvPool` resets finished envs."""

    num_envs: int

    def reset_one(self, i: int, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict[str, Any]]:  # fmt: skip
        """Env i's new episode: (its observation, info)."""

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """Every env one step: (observations with a leading N axis, rewards, terminated,
        truncated); a `successes` attribute, if the envs have one, is (N,) bool for this step.
        The observation arrays must be new ones each step, not a reused buffer: the pool hands
        them to its caller and keeps its final observations."""

    def close(self) -> None: ...


class GymEnvs:
    """Single Gymnasium envs as a `BatchedEnv`, stepped one after another."""

    def __init__(self, envs: list[gym.Env]) -> None:
        self.envs, self.num_envs = envs, len(envs)
        self.successes = np.zeros(self.num_envs, bool)

    def reset_one(self, i: int, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict[str, Any]]:  # fmt: skip
        return self.envs[i].reset(seed=seed, options=options)

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        out = [env.step(actions[i]) for i, env in enumerate(self.envs)]
        obs = [as_dict(o[0]) for o in out]
        self.successes = np.array([bool(success_of(o[4])) for o in out])
        return (
            {k: np.stack([o[k] for o in obs]) for k in obs[0]},
            np.array([o[1] for o in out], np.float64),
            np.array([o[2] for o in out], bool),
            np.array([o[3] for o in out], bool),
        )

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_envs(env_fns: list[Callable[[], gym.Env]]) -> BatchedEnv:
    """One batched env when every factory is the same one with a `batched(n)` method (such as
    `sim.hopper.HopperV5`), else the factories' envs stepped one by one."""
    first = env_fns[0]
    if hasattr(first, "batched") and all(f is first for f in env_fns):
        return first.batched(len(env_fns))
    return GymEnvs([f() for f in env_fns])


class EnvPool:
    """N envs stepped together. Finished envs are reset at once with the next seed.

    `step` returns the next observations (a new episode's first one for envs that just
    finished), rewards, terminated, truncated, the final observations of finished envs (for
    bootstrapping truncated episodes) and the finished EpisodeRecords. The envs are one
    `BatchedEnv` (see `make_envs`).
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        *,
        seed: int = 0,
        record: bool = True,
        reset_options: Callable[[int], dict | None] | None = None,
    ) -> None:
        self.envs = make_envs(env_fns)
        self.n = len(env_fns)
        self.record = record
        self.reset_options = reset_options
        self._next_seed = seed
        self.records: list[EpisodeRecord | None] = [None] * self.n
        starts = [self._new_episode(i) for i in range(self.n)]
        self._obs = {k: np.stack([o[k] for o, _, _ in starts]) for k in starts[0][0]}
        for i, (_, s, info) in enumerate(starts):
            self._start(i, s, info)

    def _new_episode(self, i: int) -> tuple[dict[str, np.ndarray], int, dict[str, Any]]:
        """Reset env i with the next seed: (its first observation, the seed, reset info)."""
        seed = self._next_seed
        self._next_seed += 1
        options = self.reset_options(seed) if self.reset_options else None
        obs, info = self.envs.reset_one(i, seed=seed, options=options)
        return as_dict(obs), seed, info

    def _reset(self, i: int) -> None:
        """Env i's next episode, its first observation written into row i of `_obs`."""
        obs, seed, info = self._new_episode(i)
        for k, v in obs.items():
            self._obs[k][i] = v
        self._start(i, seed, info)

    def _start(self, i: int, seed: int, info: dict[str, Any]) -> None:
        self.records[i] = EpisodeRecord(seed=seed, reset_info=dict(info))
        if self.record:
            self.records[i].obs.append({k: v[i].copy() for k, v in self._obs.items()})

    def batch(self) -> dict[str, np.ndarray]:
        """Current observations as {key: (N, ...)}, the caller's own copies (records keep
        views of the pool's)."""
        return {k: v.copy() for k, v in self._obs.items()}

    def step(self, actions: np.ndarray) -> StepResult:
        obs, r, term, trunc = self.envs.step(actions)
        obs = as_dict(obs)
        rewards = np.asarray(r, np.float32)
        term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
        success = getattr(self.envs, "successes", None)
        final_obs: dict[int, dict[str, np.ndarray]] = {}
        finished: list[EpisodeRecord] = []
        for i in range(self.n):
            rec = self.records[i]
            assert rec is not None
            if self.record:  # a copy: a view would keep all N envs' rows alive with it
                rec.obs.append({k: v[i].copy() for k, v in obs.items()})
            rec.actions.append(np.asarray(actions[i], dtype=np.float32))
            rec.rewards.append(float(r[i]))
            rec.terminated.append(bool(term[i]))
            rec.truncated.append(bool(trunc[i]))
            rec.success = rec.success or (success is not None and bool(success[i]))
        ends = np.flatnonzero(term | trunc)
        if len(ends):  # records and final_obs keep views of `obs`: new episodes go in a copy
            final_obs = {int(i): {k: v[i] for k, v in obs.items()} for i in ends}
            finished = [self.records[i] for i in ends]  # type: ignore[misc]
            self._obs = {k: v.copy() for k, v in obs.items()}
            for i in ends:
                self._reset(int(i))
        else:
            self._obs = obs
        return self.batch(), rewards, term, trunc, final_obs, finished

    def segment(self, behaviour: Behaviour, noise: np.ndarray) -> Segment:
        """An on-policy rollout of these envs: `len(noise)` steps of the snapshot `behaviour`,
        its exploration drawn in advance as `noise` (T, n, A) standard normals.

        Next-step values are computed here too (finished envs bootstrap from V of their true
        last observation, not the reset one), so the caller gets everything GAE needs.
        """
        check_noise(noise, self.n, behaviour)
        pi, v_of = behaviour.actor, behaviour.value
        cols: dict[str, list] = {k: [] for k in ("obs", "action", "logp", "value", "reward", "done", "next_value")}  # fmt: skip
        finished: list[EpisodeRecord] = []
        obs = self.batch()
        v = v_of(obs)
        for eps in noise:
            a, mu, log_std = pi.sample(obs, noise=eps)
            next_obs, r, term, _trunc, final, done = self.step(np.clip(a, -1, 1))
            finished += done
            v_next = v_of(next_obs)  # V of the next step's observation: reused as that step's V
            nv = v_next.copy()
            if final:
                idx = sorted(final)
                nv[idx] = v_of({k: np.stack([final[i][k] for i in idx]) for k in final[idx[0]]})
            for k, x in (("obs", obs), ("action", a), ("logp", log_prob(a, mu, log_std)), ("value", v),
                         ("reward", r), ("done", term.astype(np.float32)), ("next_value", nv)):  # fmt: skip
                cols[k].append(x)
            obs, v = next_obs, v_next
        obs_l = cols.pop("obs")
        arrays = {k: np.stack(x) for k, x in cols.items()}
        arrays["obs"] = {k: np.stack([o[k] for o in obs_l]) for k in obs_l[0]}
        return Segment(arrays, finished, last_obs=obs)

    def close(self) -> None:
        self.envs.close()


def check_noise(noise: np.ndarray, n: int, behaviour: Behaviour) -> None:
    """ValueError unless `noise` is (T, n envs, the actor's action dims)."""
    dims = behaviour.actor.action_dim
    if noise.ndim != 3 or noise.shape[1:] != (n, dims):
        raise ValueError(f"segment noise must be (T, {n} envs, {dims} action dims), not {noise.shape}")  # fmt: skip


@dataclass
class Segment:
    """A (T, N) on-policy rollout: arrays obs {key: (T, N, ...)}, action, logp, value, reward,
    done, next_value; the episodes that finished during it; and the observations the envs are
    left at (a new episode's first for envs that just finished), where the next one starts."""

    arrays: dict[str, Any]
    finished: list[EpisodeRecord]
    last_obs: dict[str, np.ndarray]

    @staticmethod
    def concat(parts: list[Segment]) -> Segment:
        """Side by side along the env axis, in the order given."""
        first = parts[0].arrays
        arrays = {k: np.concatenate([p.arrays[k] for p in parts], axis=1) for k in first if k != "obs"}  # fmt: skip
        arrays["obs"] = {k: np.concatenate([p.arrays["obs"][k] for p in parts], axis=1) for k in first["obs"]}  # fmt: skip
        last = {k: np.concatenate([p.last_obs[k] for p in parts]) for k in parts[0].last_obs}
        return Segment(arrays, [e for p in parts for e in p.finished], last)
