"""Write a staged episode's Zarr v3 groups and single-chunk arrays without zarr's async machinery.

zarr-python 3.1.6 spends about 4 ms per array on creating and writing it (metadata, event-loop
round trips), which made a small episode cost 50 ms to stage. An episode's arrays are each one
chunk, so we write exactly what zarr would: the `zarr.json` metadata (taken from a template that
zarr itself produced, once per dtype/rank/codec) and the chunk file (`bytes` codec little-endian,
then zstd via numcodecs, the library zarr's own ZstdCodec uses). Everything is read back with
zarr; `tests/corpus/test_roundtrip.py` checks every dtype and shape through zarr.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr

ZSTD_LEVEL = 3
_zstd = numcodecs.Zstd(level=ZSTD_LEVEL)


@cache
def _template(dtype: str, ndim: int, compress: bool) -> dict[str, Any]:
    """zarr.json of a one-chunk array as zarr 3 writes it (shape filled in by the caller)."""
    store = zarr.storage.MemoryStore()
    shape = (1,) * ndim
    compressors = zarr.codecs.ZstdCodec(level=ZSTD_LEVEL) if compress else None
    zarr.create_array(store, shape=shape, chunks=shape, dtype=dtype, compressors=compressors)
    return json.loads(store._store_dict["zarr.json"].to_bytes())


def write_group(path: Path, attributes: dict[str, Any] | None = None) -> None:
    """Create a Zarr v3 group folder (the parent must exist)."""
    path.mkdir(exist_ok=True)
    meta = {"zarr_format": 3, "node_type": "group", "attributes": attributes or {}}
    (path / "zarr.json").write_text(json.dumps(meta, allow_nan=False))


def write_array(path: Path, a: np.ndarray, *, compress: bool) -> None:
    """Write `a` (ndim >= 1) as a Zarr v3 array with one chunk covering all of it."""
    if a.ndim == 0:
        raise ValueError("write_array needs at least one dimension")
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    meta = copy.deepcopy(_template(a.dtype.name, a.ndim, compress))
    meta["shape"] = list(a.shape)
    meta["chunk_grid"]["configuration"]["chunk_shape"] = [max(1, s) for s in a.shape]
    path.mkdir()
    (path / "zarr.json").write_text(json.dumps(meta))
    if a.size == 0:
        return  # zarr stores no chunk for an empty array
    chunk_dir = path.joinpath("c", *(["0"] * (a.ndim - 1)))
    chunk_dir.mkdir(parents=True)
    raw = memoryview(a).cast("B")
    (chunk_dir / "0").write_bytes(_zstd.encode(raw) if compress else raw)
