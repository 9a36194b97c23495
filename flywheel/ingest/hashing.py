"""Source content hashes: the same recording ingested twice must be recognised before decoding.

The hash covers the source's bytes (or, for files that pack many episodes and grow as a
recorder appends to them, the episode's own rows), the episode's index in the source and the
identity it is filed under (task, robot). It does not cover ingest settings such as the image
size: re-ingesting the same recording at another size is still the same recording. The runner
looks the hash up in the corpus index before any video is decoded, so a re-run costs a hash.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, cached per (path, size, mtime): datasets share files."""
    st = Path(path).stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


class SourceHash:
    """Accumulates what identifies one source episode; `value()` is the corpus `source_hash`."""

    def __init__(self, adapter: str) -> None:
        self._h = hashlib.sha256()
        self.add("flywheel.ingest", adapter)

    def add(self, *parts: Any) -> SourceHash:
        """JSON-able identity parts (episode index, task, robot, time window...)."""
        self._h.update(json.dumps(parts, sort_keys=True, default=str).encode())
        return self

    def file(self, path: str | Path) -> SourceHash:
        """A whole file's bytes (by name-independent digest: a moved dataset is the same)."""
        self._h.update(file_digest(path).encode())
        return self

    def array(self, a: np.ndarray) -> SourceHash:
        """An array's dtype, shape and bytes."""
        a = np.ascontiguousarray(a)
        self._h.update(f"{a.dtype.str}|{a.shape}".encode())
        if a.dtype.kind == "O":
            self._h.update(json.dumps(a.tolist(), default=str).encode())
        else:
            self._h.update(memoryview(a).cast("B"))
        return self

    def blob(self, b: bytes) -> SourceHash:
        """Raw bytes (encoded images), length-prefixed so boundaries count."""
        self._h.update(f"{len(b)}|".encode())
        self._h.update(b)
        return self

    def value(self) -> str:
        return "sha256:" + self._h.hexdigest()
