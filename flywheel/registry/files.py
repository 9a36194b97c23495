"""Crash-safe file primitives for the registry: atomic JSON replace, appends, identities.

Every registry mutation happens under one `flock` (the kernel drops it when a process dies, even
by SIGKILL, so a dead promoter never wedges the registry) and publishes by `os.replace`, so a
reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from pathlib import Path
from typing import Any

from flywheel.corpus.layout import flocked, fsync_dir, fsync_tree

__all__ = ["append_line", "flocked", "fsync_dir", "fsync_tree", "identity", "write_json_atomic"]


def write_json_atomic(path: Path, doc: Any) -> None:
    """Replace `path` with `doc` as JSON: temp file, fsync, rename, fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(json.dumps(doc, indent=1, sort_keys=True, default=str))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write (O_APPEND) and fsync it before returning."""
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def identity() -> str:
    """Who is acting, for the audit log: `$FLYWHEEL_USER`, else user@host."""
    if os.environ.get("FLYWHEEL_USER"):
        return os.environ["FLYWHEEL_USER"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"
