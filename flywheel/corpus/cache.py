"""A training cache: a snapshot's arrays read once, in large reads, and held in RAM as numpy.

Zarr 3 pays about a millisecond per array read, so training never reads from the store per
sample: it builds this cache (one read per array per episode, all of a chunk of episodes in
flight at once on Zarr's event loop; camera frames decoded in a thread pool) and samples from
it. Episodes are concatenated; `obs_start`/`act_start` say where each begins.

Shapes (E episodes, N = sum T_i steps, so sum (T_i + 1) = N + E observations):
    obs[k]      (N + E, *shape_k)
    images[c]   (N + E, H, W[, C]) uint8
    action      (N, A); reward, terminated, truncated (N,)
    obs_start, act_start, lengths   (E,) int64
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.corpus.errors import CorpusError
from flywheel.corpus.snapshot import Snapshot
from flywheel.corpus.stats import KeyStats

if TYPE_CHECKING:
    from flywheel.corpus.store import Corpus

_STEP_KEYS = ("action", "reward", "terminated", "truncated")
READ_CHUNK = 256
"""Episodes whose low-dim arrays are read in one gathered batch (bounds open reads and memory)."""


@dataclass
class TrainingCache:
    """Concatenated arrays of a snapshot; see the module docstring for shapes."""

    obs: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    obs_start: np.ndarray
    act_start: np.ndarray
    lengths: np.ndarray
    episode_ids: list[str]
    success: list[bool | None]
    snapshot: dict[str, Any]
    """`Snapshot.to_json()` of what this cache holds: record it in a run's lineage."""
    stats: dict[str, KeyStats]
    """Merged per-episode statistics (exactly the statistics of all cached low-dim data)."""

    @property
    def num_episodes(self) -> int:
        return len(self.lengths)

    @property
    def num_steps(self) -> int:
        return int(self.action.shape[0])

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        snapshot: Snapshot,
        *,
        obs_keys: Sequence[str] | None = None,
        cameras: Sequence[str] = (),
        workers: int = 4,
        progress: Callable[[int], None] | None = None,
    ) -> TrainingCache:
        """Read every episode of `snapshot` once and concatenate.

        `obs_keys` defaults to the low-dim keys every episode of the snapshot has; `cameras`
        are decoded into uint8 arrays (the decode is the cost: only ask for what you train on).
        `progress(n)` is called after each episode (for a progress bar).
        """
        entries = snapshot.entries
        if not entries:
            raise CorpusError(f"snapshot of {snapshot.corpus} selects no episodes")
        if obs_keys is None:
            sets = [{k[4:] for k in e.meta["features"] if k.startswith("obs/")} for e in entries]
            obs_keys = sorted(set.intersection(*sets))
        lengths = np.array([e.length for e in entries], dtype=np.int64)
        act_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        obs_start = act_start + np.arange(len(entries), dtype=np.int64)
        n_act, n_obs = int(lengths.sum()), int(lengths.sum()) + len(entries)
        spec = corpus.spec
        keys = [f"obs/{k}" for k in obs_keys] + [f"images/{c}" for c in cameras]
        keys += list(_STEP_KEYS)
        out: dict[str, np.ndarray] = {}
        for key in keys:
            f = spec.get(key)
            if f is None:
                raise CorpusError(f"{corpus.path}: no feature {key!r} in the corpus spec")
            rows = n_act if key in _STEP_KEYS else n_obs
            out[key] = np.empty((rows, *f.shape), dtype=np.dtype(f.dtype))

        def place(i: int, arrays: dict[str, np.ndarray]) -> None:
            for key, a in arrays.items():
                start = act_start[i] if key in _STEP_KEYS else obs_start[i]
                out[key][start : start + len(a)] = a

        frames = [k for k in keys if k.startswith("images/")]
        arrays = [k for k in keys if k not in frames]
        for lo in range(0, len(entries), READ_CHUNK):  # low-dim: gathered reads (read_many)
            ids = [e.episode_id for e in entries[lo : lo + READ_CHUNK]]
            for i, got in enumerate(corpus.read_many(ids, arrays), start=lo):
                place(i, got)
                if progress is not None and not frames:
                    progress(1)
        if frames:  # the decode is the cost: a thread pool (the codecs release the GIL)
            load = lambda i: place(i, corpus.read_arrays(entries[i].episode_id, frames))  # noqa: E731
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                for _ in pool.map(load, range(len(entries))):
                    if progress is not None:
                        progress(1)
        stats = snapshot.stats()
        return cls(
            obs={k: out[f"obs/{k}"] for k in obs_keys},
            images={c: out[f"images/{c}"] for c in cameras},
            action=out["action"],
            reward=out["reward"],
            terminated=out["terminated"],
            truncated=out["truncated"],
            obs_start=obs_start,
            act_start=act_start,
            lengths=lengths,
            episode_ids=[e.episode_id for e in entries],
            success=[e.success for e in entries],
            snapshot=snapshot.to_json(),
            stats={k: v for k, v in stats.items() if k[4:] in obs_keys or not k.startswith("obs/")},
        )

    def episode_of_step(self) -> np.ndarray:
        """(N,) episode number of every action row."""
        return np.repeat(np.arange(self.num_episodes, dtype=np.int64), self.lengths)
