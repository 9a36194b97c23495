"""Per-key statistics that merge exactly: count, mean, M2 (for the variance), min, max.

Each episode stores its own statistics when it is written. Merging them with Chan's parallel
formula gives the statistics of all the data without reading it again, so a training run's
normaliser comes from the index, not from a scan of the corpus.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class KeyStats:
    """Statistics of one key over the time axis, per dimension of a step."""

    count: int
    mean: np.ndarray  # (*shape,) float64
    m2: np.ndarray  # (*shape,) float64, sum of squared deviations from the mean
    min: np.ndarray  # (*shape,) float64
    max: np.ndarray  # (*shape,) float64

    @property
    def var(self) -> np.ndarray:
        """Population variance (what a normaliser divides by, after sqrt)."""
        return self.m2 / max(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation."""
        return np.sqrt(self.var)

    @classmethod
    def of(cls, values: np.ndarray) -> KeyStats:
        """Statistics of an array shaped (T, *shape) over its first axis."""
        x = np.asarray(values, dtype=np.float64)
        if x.shape[0] == 0:
            raise ValueError("statistics of an empty array")
        mean = x.mean(axis=0)
        return cls(
            count=int(x.shape[0]),
            mean=mean,
            m2=((x - mean) ** 2).sum(axis=0),
            min=x.min(axis=0),
            max=x.max(axis=0),
        )

    def merge(self, other: KeyStats) -> KeyStats:
        """Chan et al.'s pairwise update: exact in exact arithmetic, stable in floating point."""
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / n)
        return KeyStats(
            count=n,
            mean=mean,
            m2=m2,
            min=np.minimum(self.min, other.min),
            max=np.maximum(self.max, other.max),
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form stored in episode metadata; `var` is stored for readers, `m2` for merging."""
        return {
            "count": self.count,
            "mean": self.mean.tolist(),
            "var": self.var.tolist(),
            "m2": self.m2.tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KeyStats:
        """Inverse of `to_json`; float64 JSON round-trips exactly (repr is shortest-exact)."""
        return cls(
            count=int(d["count"]),
            mean=np.asarray(d["mean"], dtype=np.float64),
            m2=np.asarray(d["m2"], dtype=np.float64),
            min=np.asarray(d["min"], dtype=np.float64),
            max=np.asarray(d["max"], dtype=np.float64),
        )


def merge_all(stats: Iterable[dict[str, KeyStats]]) -> dict[str, KeyStats]:
    """Merge per-episode statistics key by key (keys missing in an episode are skipped)."""
    out: dict[str, KeyStats] = {}
    for per_key in stats:
        for key, s in per_key.items():
            out[key] = s if key not in out else out[key].merge(s)
    return out
