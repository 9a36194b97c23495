"""Parquet tables as numpy: what LeRobot's columns hold, checked row by row.

LeRobot stores vectors as (fixed-size) list columns and camera images of `image` features as
structs of encoded bytes. Reading them into arrays is where nulls, ragged rows (a joint that
dropped out) and non-numeric columns are found, so the errors name the file, column and row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flywheel.ingest.errors import IngestError
from flywheel.ingest.frames import LazyFrames
from flywheel.ingest.hashing import SourceHash


def read_table(path: Path) -> Any:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise IngestError(str(path), "(file)", "missing parquet file")
    try:
        return pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError... for damaged files
        raise IngestError(str(path), "(file)", f"unreadable parquet: {e}") from None


def column(table: Any, key: str, file: str) -> np.ndarray:
    """A numeric or fixed-length list column as (N,) or (N, D); refuses nulls and ragged rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if key not in table.column_names:
        raise IngestError(file, key, f"missing column (has {sorted(table.column_names)})")
    col = table.column(key).combine_chunks()
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise IngestError(file, key, f"missing value (null) at row {row}")
    t = col.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        lens = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if len(lens) and (lens != lens[0]).any():
            row = int(np.flatnonzero(lens != lens[0])[0])
            raise IngestError(
                file, key, f"shape mismatch: row {row} has {lens[row]} values, row 0 has {lens[0]}"
            )
        flat = col.flatten()
        if flat.null_count:
            raise IngestError(file, key, "missing value (null) inside a list")
        try:
            values = flat.to_numpy(zero_copy_only=False)
        except Exception as e:
            raise IngestError(file, key, f"dtype {flat.type} is not numeric: {e}") from None
        return values.reshape(len(col), -1) if len(col) else values.reshape(0, 0)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return col.to_numpy(zero_copy_only=False)
    raise IngestError(file, key, f"dtype {t} is not numeric")


def image_frames(table: Any, key: str, file: str) -> LazyFrames:
    """`image` features: PNG/JPEG bytes in a struct column, decoded only where used."""
    rows = table.column(key).to_pylist()
    blobs = []
    for i, r in enumerate(rows):
        b = r.get("bytes") if isinstance(r, dict) else r
        if not b:
            raise IngestError(file, key, f"row {i} has no image bytes")
        blobs.append(b)

    def decode(i: int) -> tuple[np.ndarray, bool]:
        img = cv2.imdecode(np.frombuffer(blobs[i], np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"row {i} is not a decodable image")
        return img, img.ndim == 3

    try:
        first = decode(0)[0] if blobs else np.zeros((1, 1, 3), np.uint8)
    except ValueError as e:
        raise IngestError(file, key, f"undecodable image: {e}") from None
    return LazyFrames(len(blobs), decode, (int(first.shape[0]), int(first.shape[1])))


def hash_rows(h: SourceHash, table: Any) -> None:
    """The episode's own rows, column by column (values and list lengths)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for c in sorted(table.column_names):
        col = table.column(c).combine_chunks()
        h.add(c, str(col.type), col.null_count)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            h.array(pc.list_value_length(col).to_numpy(zero_copy_only=False))
            col = col.flatten()
        elif pa.types.is_fixed_size_list(col.type):
            col = col.flatten()
        elif pa.types.is_struct(col.type):  # image features: the encoded bytes
            col = pa.array([r.get("bytes") if r else None for r in col.to_pylist()], pa.binary())
        if pa.types.is_binary(col.type):
            for b in col.to_pylist():
                h.blob(b or b"")
        else:
            h.array(col.to_numpy(zero_copy_only=False))
