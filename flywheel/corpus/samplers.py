"""Samplers over a `TrainingCache`: transitions for TD learning, windows for sequence policies.

Both precompute index arrays once, so a batch is a handful of numpy fancy-indexing calls (the
cost of a plain array lookup); neither ever crosses an episode boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from flywheel.corpus.cache import TrainingCache

A = TypeVar("A")


def transition_columns(cache: TrainingCache) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cache's arrays under their batch names: one dict indexed by observation row (low-dim
    keys and camera frames side by side), one indexed by step (`done` is `terminated`)."""
    rows = {**cache.obs, **cache.images}
    steps = {"action": cache.action, "reward": cache.reward, "done": cache.terminated, "truncated": cache.truncated}  # fmt: skip
    return rows, steps


OUTCOME = ("done", "truncated")
"""Step columns that describe how a transition ends: an n-step one takes its last step's."""


def gather_transitions(
    rows: Mapping[str, A],
    steps: Mapping[str, A],
    j: Any,
    o: Any,
    take: Callable[[A, Any], A],
    last: Any = None,
) -> dict[str, Any]:
    """The batch of steps `j` whose observation rows are `o`: s at row o, s' at o + 1 (the
    episode's next row; the kept final observation after its last step). `take(array, index)`
    gathers, so the same mapping serves numpy arrays and tensors. With `last` (the last step of
    each n-step window, same episode), s' is the row after it and the `OUTCOME` columns are its."""
    nxt, end = (o + 1, j) if last is None else (o + 1 + (last - j), last)
    return {
        "obs": {k: take(v, o) for k, v in rows.items()},
        "next_obs": {k: take(v, nxt) for k, v in rows.items()},
        **{k: take(v, end if k in OUTCOME else j) for k, v in steps.items()},
    }


@dataclass
class TransitionSampler:
    """Uniform (s, a, r, s', done) batches.

    `done` is `terminated` (the task ended: no bootstrap); a time-limit `truncated` step still
    bootstraps from s'. s' of the last step is the kept final observation.
    """

    cache: TrainingCache
    batch_size: int = 256
    seed: int = 0
    weights: np.ndarray | None = None
    """Optional (N,) non-negative sampling weights per step (e.g. success filtering)."""
    _obs_of_step: np.ndarray = field(init=False, repr=False)
    _rng: np.random.Generator = field(init=False, repr=False)
    _p: np.ndarray | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # obs row of action row j: obs_start[e] + (j - act_start[e]) = j + e
        self._obs_of_step = np.arange(self.cache.num_steps) + self.cache.episode_of_step()
        self._rng = np.random.default_rng(self.seed)
        self._p = None
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != (self.cache.num_steps,) or (w < 0).any() or w.sum() <= 0:
                raise ValueError("weights must be (num_steps,), non-negative, not all zero")
            self._p = w / w.sum()

    def indices(self) -> np.ndarray:
        """(B,) action-row indices of the next batch."""
        n = self.cache.num_steps
        if self._p is None:
            return self._rng.integers(0, n, size=self.batch_size)
        return self._rng.choice(n, size=self.batch_size, p=self._p)

    def obs_rows(self, j: np.ndarray) -> np.ndarray:
        """(B,) observation rows of action rows `j` (s' of a step is the row after)."""
        return self._obs_of_step[j]

    def sample(self, j: np.ndarray | None = None) -> dict[str, object]:
        """A batch: obs/next_obs dicts (B, *shape) of low-dim keys and cameras, action (B, A),
        reward/done/truncated (B,)."""
        j = self.indices() if j is None else j
        rows, steps = transition_columns(self.cache)
        return gather_transitions(rows, steps, j, self.obs_rows(j), lambda v, i: v[i])


@dataclass
class WindowSampler:
    """Windows of `n_obs` observations ending at step t and `n_action` actions starting at t.

    Windows are padded by repeating the episode's first observation / last action at its edges,
    and come with masks (True = real data), as diffusion/chunking policies expect.
    """

    cache: TrainingCache
    n_obs: int = 2
    n_action: int = 8
    batch_size: int = 256
    seed: int = 0
    _ep: np.ndarray = field(init=False, repr=False)
    _t: np.ndarray = field(init=False, repr=False)
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_obs < 1 or self.n_action < 1:
            raise ValueError("n_obs and n_action must be >= 1")
        self._ep = self.cache.episode_of_step()
        self._t = np.arange(self.cache.num_steps) - self.cache.act_start[self._ep]
        self._rng = np.random.default_rng(self.seed)

    def sample(self, j: np.ndarray | None = None) -> dict[str, object]:
        """obs {k: (B, n_obs, *shape)}, action (B, n_action, A), obs_mask, action_mask."""
        c = self.cache
        j = self._rng.integers(0, c.num_steps, size=self.batch_size) if j is None else j
        ep, t = self._ep[j], self._t[j]  # (B,)
        T = c.lengths[ep][:, None]  # (B, 1)
        to = t[:, None] + np.arange(-(self.n_obs - 1), 1)  # (B, n_obs) step of each obs
        ta = t[:, None] + np.arange(self.n_action)  # (B, n_action)
        obs_mask, action_mask = to >= 0, ta < T
        oi = c.obs_start[ep][:, None] + np.clip(to, 0, None)
        ai = c.act_start[ep][:, None] + np.minimum(ta, T - 1)
        return {
            "obs": {k: v[oi] for k, v in c.obs.items()},
            "images": {k: v[oi] for k, v in c.images.items()},
            "action": c.action[ai],
            "obs_mask": obs_mask,
            "action_mask": action_mask,
        }
