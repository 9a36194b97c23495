"""Observations at deployment: checking them against a bundle's schema, and recorded batches.

A controller runs on whatever a robot sends, so every observation is checked before a policy
sees it: exactly the schema's keys, each an ndarray of the schema's shape and dtype, and finite.
Recorded observations (from evaluation rollouts) are what export parity is checked on; they are
stored as `.npz` and always loaded with `allow_pickle=False`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]
"""Observations {key: (N, *shape)}."""


class ObservationSpec:
    """The observation half of a bundle schema, precomputed for a fast per-tick check."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        obs = schema["observation"]
        self.keys: tuple[str, ...] = tuple(obs)
        self.shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in obs.items()}
        self.dtypes = {k: np.dtype(v["dtype"]) for k, v in obs.items()}
        self._keyset = frozenset(self.keys)
        self._float = {k for k, d in self.dtypes.items() if d.kind == "f"}

    def check(self, obs: Any) -> tuple[str, str] | None:
        """None if `obs` is valid, else (code, message) naming the key and what is wrong.

        Codes: `schema` (keys, types, shapes, dtypes) and `nonfinite` (NaN or inf values).
        """
        if not isinstance(obs, Mapping):
            return "schema", f"observation must be a map of arrays, got {type(obs).__name__}"
        if obs.keys() != self._keyset:
            missing = sorted(self._keyset - set(obs))
            extra = sorted(set(obs) - self._keyset)
            return (
                "schema",
                f"observation keys differ from the schema: missing {missing}, unexpected {extra}",
            )
        for k in self.keys:
            x = obs[k]
            if not isinstance(x, np.ndarray):
                return "schema", f"observation[{k!r}]: expected an ndarray, got {type(x).__name__}"
            if x.dtype != self.dtypes[k]:
                return (
                    "schema",
                    f"observation[{k!r}]: dtype {x.dtype}, schema says {self.dtypes[k]}",
                )
            if x.shape != self.shapes[k]:
                return (
                    "schema",
                    f"observation[{k!r}]: shape {x.shape}, schema says {self.shapes[k]}",
                )
            if k in self._float and not np.isfinite(x).all():
                return "nonfinite", f"observation[{k!r}]: contains NaN or inf"
        return None


def stack_records(records: list[Any], keys: tuple[str, ...], limit: int = 512) -> Batch:
    """Observations from evaluation EpisodeRecords (`.obs` lists), evenly thinned to `limit`."""
    frames = [o for r in records for o in r.obs]
    if not frames:
        raise ValueError("no recorded observations (evaluate with keep_records=True)")
    idx = np.linspace(0, len(frames) - 1, min(limit, len(frames))).round().astype(int)
    return {k: np.stack([frames[i][k] for i in idx]) for k in keys}


def synthetic(
    schema: Mapping[str, Any], normalizer_doc: Mapping[str, Any] | None, n: int = 256, seed: int = 0
) -> Batch:
    """Observations drawn around the normaliser's mean (+-3 std), for when none were recorded.

    Includes points beyond the normaliser's clip range so exports are checked where the clamp
    is active too.
    """
    rng = np.random.default_rng(seed)
    out: Batch = {}
    keys = (normalizer_doc or {}).get("keys", {})
    for k, v in schema["observation"].items():
        shape = tuple(v["shape"])
        if np.dtype(v["dtype"]) == np.uint8:
            out[k] = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
            continue
        mean = np.asarray(keys.get(k, {}).get("mean", np.zeros(shape)), np.float32)
        std = np.asarray(keys.get(k, {}).get("std", np.ones(shape)), np.float32)
        z = rng.normal(size=(n, *shape)).astype(np.float32)
        z[: n // 16] *= 12.0  # beyond the normaliser's clip at 10 std
        out[k] = (mean + std * z).astype(np.float32)
    return out


def save_batch(path: Path, batch: Batch) -> None:
    """Write observations as an uncompressed npz (no pickled objects)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **batch)
    tmp.replace(path)


def load_batch(path: Path) -> Batch:
    """Read observations saved by `save_batch`; object arrays are refused, never unpickled."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def batch_len(batch: Batch) -> int:
    return len(next(iter(batch.values())))
