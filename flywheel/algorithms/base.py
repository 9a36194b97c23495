"""The contract every algorithm shares, and the two axes that tell algorithms apart.

Every algorithm is *evaluate the policy, then improve it*. What differs:

- **where the data comes from** - a `DataSource`: `OfflineSource` (a corpus snapshot),
  `ReplaySource` (past online rollouts), `MixedSource` (both, RLPD-style), or fresh on-policy
  rollouts (PPO collects them itself, see `ppo.py`);
- **how often the policy is updated** - an `UpdateSchedule`: `ONE_STEP` (fit once: BC),
  `MULTI_STEP` (a few gated generations per snapshot), `ITERATIVE` (thousands: PPO, SAC).

Each algorithm exposes `update(batch) -> metrics` and its state for checkpoints; the loops that
feed it live in `flywheel.training`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from flywheel.corpus import TrainingCache, TransitionSampler
from flywheel.corpus.samplers import gather_transitions, transition_columns

Batch = dict[str, Any]
"""obs {key: (B, ...)}, action (B, A), reward (B,), next_obs {key: (B, ...)}, done (B,) tensors.

A source asked for n-step transitions (`n_step` > 1) adds `rewards` (B, n), the rewards of up
to n steps of the same episode from s on (zeros past its end), and `steps` (B,), how many of
them count (m); `next_obs` and `done` are then those of the m-th step. `n_step_return` turns
them into a TD target. An `OfflineSource` batch also says which snapshot transition each row
is (`row`, (B,) int64), so values fixed per transition can be looked up, not recomputed."""


class UpdateSchedule(enum.Enum):
    """How often the policy is updated per batch of data (the second axis)."""

    ONE_STEP = "one-step"
    MULTI_STEP = "multi-step"
    ITERATIVE = "iterative"


class DataKind(enum.Enum):
    """Where the data comes from (the first axis)."""

    OFFLINE = "offline"
    REPLAY = "replay"
    ONLINE = "online"


class Algorithm(Protocol):
    """What every algorithm is to the training loops."""

    name: str
    schedule: UpdateSchedule
    data: DataKind

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on `batch`; returns scalar metrics (losses, values)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks and optimiser states."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class DataSource(Protocol):
    """Something that yields training batches."""

    kind: DataKind

    def sample(self, batch_size: int) -> Batch: ...


def to_torch(batch: Mapping[str, Any], device: torch.device | str = "cpu") -> Batch:
    """numpy batch (nested dicts allowed) -> float32 tensors (uint8 images stay uint8)."""
    out: Batch = {}
    for k, v in batch.items():
        if isinstance(v, Mapping):
            out[k] = to_torch(v, device)
        else:
            t = torch.as_tensor(np.asarray(v))
            out[k] = (t if t.dtype == torch.uint8 else t.float()).to(device)
    return out


@dataclass
class OfflineSource:
    """Transitions from a corpus snapshot's training cache (optionally success-weighted)."""

    cache: TrainingCache
    seed: int = 0
    weights: np.ndarray | None = None
    device: str = "cpu"
    n_step: int = 1
    """Steps per transition (see `Batch`); a window stops at its episode's last step."""
    kind: DataKind = DataKind.OFFLINE

    def __post_init__(self) -> None:
        _check_n_step(self.n_step)
        self._sampler = TransitionSampler(self.cache, seed=self.seed, weights=self.weights)
        # the cache as tensors once (float32; camera frames stay uint8 and are shared, not
        # copied): a batch is then one `index_select` per key instead of a numpy gather and a
        # conversion per key, 0.38 -> ~0.1 ms for a low-dim batch of 256 (twice per step of
        # the retrain, whose whole step is ~12 ms compiled)
        rows, steps = transition_columns(self.cache)
        self._rows, self._steps = to_torch(rows), to_torch(steps)
        ends = self.cache.act_start + self.cache.lengths  # one past each episode's last step
        self._left = ends[self.cache.episode_of_step()] - np.arange(self.cache.num_steps)

    def sample(self, batch_size: int) -> Batch:
        """(s, a, r, s', done, truncated) rows, as `TransitionSampler.sample` draws them, and
        `row` (B,): which of the snapshot's transitions each is (see `in_order`)."""
        self._sampler.batch_size = batch_size
        j = self._sampler.indices()
        o = torch.from_numpy(self._sampler.obs_rows(j))
        take = lambda t, i: t.index_select(0, i).to(self.device)  # noqa: E731
        jt = torch.from_numpy(j)
        row = jt.to(self.device)
        if self.n_step == 1:
            return {**gather_transitions(self._rows, self._steps, jt, o, take), "row": row}
        # steps j .. j + m - 1 of one episode: contiguous rows here
        m = np.minimum(self.n_step, self._left[j])
        batch = gather_transitions(self._rows, self._steps, jt, o, take, torch.from_numpy(j + m - 1))  # fmt: skip
        k = np.arange(self.n_step)
        idx = torch.from_numpy(j[:, None] + np.minimum(k, m[:, None] - 1))
        valid = torch.from_numpy(k < m[:, None]).float().to(self.device)
        rewards = take(self._steps["reward"], idx.reshape(-1)).reshape(idx.shape) * valid
        batch.update(rewards=rewards, steps=torch.from_numpy(m).float().to(self.device), row=row)
        return batch

    def in_order(self, chunk: int | None = None) -> Iterator[Batch]:
        """Every transition once, in `row` order, `chunk` at a time: `obs` and `action`, for
        evaluating a frozen network on the whole snapshot (one pass, not one per batch). By
        default 4,096 low-dim rows, or 256 with camera frames (their encoder's activations)."""
        n = self.cache.num_steps
        chunk = chunk or (256 if self.cache.images else 4096)
        for start in range(0, n, chunk):
            j = torch.arange(start, min(start + chunk, n))
            o = torch.from_numpy(self._sampler.obs_rows(j.numpy()))
            yield {
                "obs": {k: v.index_select(0, o).to(self.device) for k, v in self._rows.items()},
                "action": self._steps["action"].index_select(0, j).to(self.device),
            }

    def rng_state(self) -> dict[str, Any]:
        return self._sampler._rng.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._sampler._rng.bit_generator.state = state


class ReplaySource:
    """A ring buffer of online transitions (same keys as the offline batches).

    Transitions come N at a time, one per env of a vector env, always the same N, so the next
    step of row j's env is row j + N: that is how `n_step` > 1 windows are found.
    """

    kind = DataKind.REPLAY

    def __init__(self, capacity: int, seed: int = 0, device: str = "cpu", *, n_step: int = 1) -> None:  # fmt: skip
        _check_n_step(n_step)
        self.capacity, self.device, self.n_step = capacity, device, n_step
        self._data: dict[str, Any] | None = None
        self._n = self._i = self._width = 0
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self._n

    def add(
        self,
        obs: dict,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: dict,
        done: np.ndarray,
        end: np.ndarray | None = None,
    ) -> None:
        """Add a batch of N transitions (arrays with a leading N axis). `done` is terminated;
        `end` (default `done`) marks every episode's last step, time limits included, where an
        n-step window stops."""
        n = len(action)
        if self._width and n != self._width:
            raise ValueError(f"replay rows come {self._width} at a time (one per env), not {n}")
        self._width = n
        end = done if end is None else end
        if self._data is None:
            mk = lambda a: np.zeros((self.capacity, *np.shape(a)[1:]), np.asarray(a).dtype)  # noqa: E731
            self._data = {
                "obs": {k: mk(v) for k, v in obs.items()},
                "next_obs": {k: mk(v) for k, v in next_obs.items()},
                "action": mk(action),
                "reward": mk(reward),
                "done": mk(done),
                "end": np.zeros(self.capacity, bool),
            }
        idx = (self._i + np.arange(n)) % self.capacity
        d = self._data
        for k in d["obs"]:
            d["obs"][k][idx] = obs[k]
            d["next_obs"][k][idx] = next_obs[k]
        d["action"][idx], d["reward"][idx], d["done"][idx] = action, reward, done
        d["end"][idx] = np.asarray(end, bool)
        self._i = (self._i + n) % self.capacity
        self._n = min(self._n + n, self.capacity)

    def state_dict(self) -> dict[str, Any]:
        """Contents and position as tensors (for a `weights_only` checkpoint)."""

        def rows(d: Mapping[str, Any]) -> dict[str, Any]:
            return {k: rows(v) if isinstance(v, Mapping) else torch.from_numpy(v[: self._n].copy()) for k, v in d.items()}  # fmt: skip

        return {"data": rows(self._data or {}), "i": self._i, "n": self._n, "width": self._width, "rng": json.dumps(self._rng.bit_generator.state)}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._i, self._n, self._width = int(state["i"]), int(state["n"]), int(state.get("width", 0))
        self._rng.bit_generator.state = json.loads(state["rng"])

        def grown(d: Mapping[str, Any]) -> dict[str, Any]:  # the inverse of `rows` above
            return {k: grown(v) if isinstance(v, Mapping) else _grow(v.numpy(), self.capacity) for k, v in d.items()}  # fmt: skip

        self._data = grown(state["data"]) or None
        if self._data is not None and "end" not in self._data:  # a checkpoint from before `end`
            self._data["end"] = self._data["done"] > 0

    def sample(self, batch_size: int) -> Batch:
        assert self._data is not None, "empty replay"
        j = self._rng.integers(0, self._n, size=batch_size)
        d = self._data
        last, window = j, {}  # the row whose s' and done end each transition
        if self.n_step > 1:
            last, rewards, m = self._window(j)
            window = {"rewards": rewards, "steps": m}
        batch = {
            "obs": {k: v[j] for k, v in d["obs"].items()},
            "next_obs": {k: v[last] for k, v in d["next_obs"].items()},
            "action": d["action"][j],
            "reward": d["reward"][j],
            "done": d["done"][last],
            **window,
        }
        return to_torch(batch, self.device)

    def _window(self, j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's n-step window: its last row, rewards (B, n) and length m (B,). It stops
        after an episode's last step and at the newest row of the env."""
        d, w, cap = self._data, self._width, self.capacity
        assert d is not None
        newer = (self._i - 1 - j) % cap  # rows written after row j
        last, m = j.copy(), np.ones(len(j), np.int64)
        rewards = np.zeros((len(j), self.n_step), np.float32)
        rewards[:, 0] = d["reward"][j]
        alive = np.full(len(j), w > 0)  # width unknown (a checkpoint from before it): 1 step
        for k in range(1, self.n_step):
            alive &= ~d["end"][last] & (k * w <= newer)
            row = (j + k * w) % cap
            rewards[:, k] = np.where(alive, d["reward"][row], 0.0)
            last = np.where(alive, row, last)
            m += alive
        return last, rewards, m


def _check_n_step(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n_step must be a whole number of steps, at least 1, not {n!r}")


def _grow(a: np.ndarray, capacity: int) -> np.ndarray:
    """The first rows of a ring buffer, back in a buffer of full capacity."""
    out = np.zeros((capacity, *a.shape[1:]), a.dtype)
    out[: len(a)] = a
    return out


@dataclass
class MixedSource:
    """Half of each batch from each source (RLPD's symmetric sampling)."""

    offline: DataSource
    online: DataSource
    kind: DataKind = DataKind.REPLAY

    def sample(self, batch_size: int) -> Batch:
        a = self.offline.sample(batch_size // 2)
        b = self.online.sample(batch_size - batch_size // 2)
        return _cat(a, b)


def _cat(a: Batch, b: Batch) -> Batch:
    out: Batch = {}
    for k in ("obs", "next_obs"):
        out[k] = {key: torch.cat([a[k][key], b[k][key]]) for key in b[k]}
    for k in ("action", "reward", "done", "rewards", "steps"):
        if k in a or k in b:
            out[k] = torch.cat([a[k], b[k]])
    return out


def scalars(metrics: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    """Tensor metrics -> floats, once per step (losses return tensors so they can be compiled)."""
    return {k: float(v.detach() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}


def to_device(algo: object, device: torch.device | str) -> None:
    """Move every network of an algorithm (its `nn.Module` attributes) to `device` in place.

    Call before the first update: the parameters keep their identity (`module.to` swaps their
    data), and each optimiser `Step` then moves its state after them (`relink`).
    """
    for value in vars(algo).values():
        if isinstance(value, torch.nn.Module):
            value.to(device)
    for value in vars(algo).values():
        if callable(getattr(value, "relink", None)):  # an optimiser `Step`
            value.relink()


def soft_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """Polyak averaging of target network parameters."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def absorbing_reward(
    reward: torch.Tensor, done: torch.Tensor, discount: float, *, enabled: bool = True
) -> torch.Tensor:
    """Rewards with every terminated step counted as an absorbing state: r / (1 - gamma).

    Our tasks end an episode on success. With dense shaping that pays every step (reach, grasp,
    lift), a plain terminal (value 0 after it) makes finishing worth less than hovering just
    short of success until the time limit: 3.5 a step for 80 steps out-earns one success bonus,
    so RL learns not to succeed. Treating success as a state that keeps paying its reward
    forever makes finishing, and finishing sooner, the best thing to do. Only right where a
    termination means success: `enabled=False` (each learner's `absorbing_terminal`) returns the
    rewards unchanged, for data whose terminations may be failures.
    """
    return torch.where(done > 0, reward / (1.0 - discount), reward) if enabled else reward


def n_step_return(
    batch: Batch, discount: float, *, absorbing: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) discounted reward sums of a batch's transitions and (B,) the discount of their
    bootstrap: sum_k<m gamma^k r_k and gamma^m, the target being sum + gamma^m (1 - done) V(s_m).

    Why n steps: on a 120-step manipulation episode whose shaping is flat far from the object,
    a one-step target moves the value of success back one step per sweep; n steps move it n.
    A one-step batch (no `rewards`) gives r and gamma. The last step's reward of a terminated
    window is counted as absorbing (`absorbing_reward`) when `absorbing` is on.
    """
    if "rewards" not in batch:
        r = absorbing_reward(batch["reward"], batch["done"], discount, enabled=absorbing)
        return r, torch.full_like(r, discount)
    rewards, m, done = batch["rewards"], batch["steps"], batch["done"]
    k = torch.arange(rewards.shape[1], device=rewards.device, dtype=rewards.dtype)
    last = (k == (m - 1).unsqueeze(1)) & (done > 0).unsqueeze(1)
    if absorbing:
        rewards = torch.where(last, rewards / (1.0 - discount), rewards)
    return (rewards * discount**k).sum(1), discount**m
