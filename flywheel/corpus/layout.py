"""Where things live inside a corpus folder, and the file locks that order writers.

    corpus.zarr/
      zarr.json                 root group; attributes hold schema version and feature spec
      episodes/<episode_id>/    one Zarr group per committed episode (immutable once there)
      .staging/<name>/          episodes being written; renamed into episodes/ when complete;
                                the writer holds an flock on the folder itself while it writes
      index.sqlite              the episode index (WAL mode); an entry is the commit point
      corpus.lock               shared by committers, exclusive for repair and index rebuild
      quarantine/<id>/          refused input with its reason

Locks are `flock`s: the kernel drops them when a process dies, even by SIGKILL, so a stale
staging folder is one whose lock can be taken (and that is older than a short grace period,
which covers the instant between a writer's mkdir and its flock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT_ATTR = "flywheel_corpus"
EPISODE_ATTR = "flywheel_episode"


@dataclass(frozen=True)
class Layout:
    """Paths of one corpus folder."""

    root: Path

    @property
    def episodes(self) -> Path:
        return self.root / "episodes"

    @property
    def staging(self) -> Path:
        return self.root / ".staging"

    @property
    def index(self) -> Path:
        return self.root / "index.sqlite"

    @property
    def lock(self) -> Path:
        return self.root / "corpus.lock"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def episode(self, episode_id: str) -> Path:
        return self.episodes / episode_id


@contextlib.contextmanager
def flocked(path: Path, *, exclusive: bool, blocking: bool = True) -> Iterator[bool]:
    """Hold an flock on `path` (a file, created if missing, or a folder) for the block.

    Yields False when non-blocking and the lock is held by someone else.
    """
    fd = (
        os.open(path, os.O_RDONLY)
        if path.is_dir()
        else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    )
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode if blocking else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file and folder under `path`, so a rename publishes data that is on disk."""
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    """fsync a folder so that renames and creations in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
