"""`verify` finds what a crash can leave behind; `repair` cleans it up without losing an episode.

What a killed writer can leave: a staging folder (killed before the rename), or a complete but
unindexed episode folder (killed between the rename and the index insert). Neither is visible to
readers. `repair` removes the first and adopts the second (or removes it when its content is
already indexed). The fast checks list two folders and query the index once; they never open
episode groups, so they cost the same per episode at 1k or 100k episodes. `deep` also reads every
array and compares it with the digest written at commit time.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zarr

from flywheel.corpus.errors import CorpusError
from flywheel.corpus.layout import EPISODE_ATTR, flocked
from flywheel.corpus.store import Corpus
from flywheel.corpus.writer import digest, entry_from_meta

STAGING_GRACE_S = 60.0
"""An unlocked, empty staging folder younger than this may belong to a writer about to lock it."""


@dataclass
class VerifyReport:
    """What `verify` found."""

    episodes: int = 0
    corrupt: list[dict[str, str]] = field(default_factory=list)
    stale_staging: list[str] = field(default_factory=list)
    unindexed: list[str] = field(default_factory=list)
    active_staging: int = 0

    @property
    def orphans(self) -> int:
        return len(self.stale_staging) + len(self.unindexed)

    @property
    def ok(self) -> bool:
        return not self.corrupt and self.orphans == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "episodes": self.episodes,
            "corrupt": self.corrupt,
            "orphans": self.orphans,
            "stale_staging": self.stale_staging,
            "unindexed": self.unindexed,
            "active_staging": self.active_staging,
        }


def _stale(path: Any) -> bool:
    """A staging folder whose writer is gone: its flock is free, and it is not brand new and empty.

    A writer flocks the folder right after creating it and before writing into it, so a free lock
    on a non-empty folder always means a dead writer; only an empty one gets the grace period.
    """
    with flocked(path, exclusive=True, blocking=False) as got:
        if not got:
            return False
    return any(os.scandir(path)) or time.time() - path.stat().st_mtime >= STAGING_GRACE_S


def verify(
    corpus: Corpus, *, deep: bool = False, progress: Callable[[int], None] | None = None
) -> VerifyReport:
    """Check the corpus; `deep` re-reads every array of every indexed episode."""
    lay = corpus.layout
    rep = VerifyReport()
    with flocked(lay.lock, exclusive=True):  # a consistent view: no commit is half-way
        indexed = corpus.index.ids()
        on_disk = {e.name for e in os.scandir(lay.episodes) if e.is_dir()}
    rep.episodes = len(indexed)
    rep.unindexed = sorted(on_disk - indexed)
    rep.corrupt = [
        {"episode_id": i, "reason": "indexed but its folder is missing"}
        for i in sorted(indexed - on_disk)
    ]
    if lay.staging.exists():
        for e in os.scandir(lay.staging):
            if not e.is_dir():
                continue
            if _stale(lay.staging / e.name):
                rep.stale_staging.append(e.name)
            else:
                rep.active_staging += 1
    if deep:
        for i in sorted(indexed & on_disk):
            reason = check_episode(corpus, i)
            if reason is not None:
                rep.corrupt.append({"episode_id": i, "reason": reason})
            if progress is not None:
                progress(1)
    return rep


def check_episode(corpus: Corpus, episode_id: str) -> str | None:
    """Read every array of an episode; None when it matches its metadata and digests."""
    try:
        g = zarr.open_group(corpus.layout.episode(episode_id), mode="r")
        meta = g.attrs[EPISODE_ATTR]
        T = int(meta["length"])
        for path, want in meta["digests"].items():
            a = g[path][...]
            if digest(a) != want:
                return f"{path}: content differs from its commit-time digest"
            step = path in ("action", "reward", "terminated", "truncated")
            if not path.startswith("images/") and len(a) != (T if step else T + 1):
                return f"{path}: length {len(a)} does not match the episode length {T}"
    except Exception as e:  # any unreadable part is what we are looking for
        return f"unreadable: {type(e).__name__}: {e}"
    return None


def repair(
    corpus: Corpus, *, deep: bool = False, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Remove stale staging, adopt or remove unindexed episodes; with `deep`, quarantine corrupt ones.

    Holds the corpus's exclusive lock, so it never races a commit.
    """
    lay = corpus.layout
    done: dict[str, Any] = {"removed_staging": 0, "adopted": [], "removed_duplicates": 0}
    rep = verify(corpus, deep=deep, progress=progress)
    with flocked(lay.lock, exclusive=True):
        for name in rep.stale_staging:
            shutil.rmtree(lay.staging / name, ignore_errors=True)
            done["removed_staging"] += 1
        hashes = corpus.index.hashes()
        for episode_id in rep.unindexed:
            path = lay.episode(episode_id)
            reason = check_episode(corpus, episode_id)
            meta = None if reason else dict(zarr.open_group(path, mode="r").attrs[EPISODE_ATTR])
            if meta is None or meta["source_hash"] in hashes:
                shutil.rmtree(path)  # a renamed episode is complete; this only drops duplicates
                done["removed_duplicates"] += 1
                continue
            corpus.index.commit(entry_from_meta(meta), lambda: None)
            hashes.add(meta["source_hash"])
            done["adopted"].append(episode_id)
        quarantined = []
        for bad in rep.corrupt:
            src = lay.episode(bad["episode_id"])
            if src.exists():
                lay.quarantine.mkdir(exist_ok=True)
                os.rename(src, lay.quarantine / f"corrupt-{bad['episode_id']}")
            quarantined.append(bad)
        corpus.index.remove([b["episode_id"] for b in quarantined])
        done["quarantined_corrupt"] = quarantined
    return done


def rebuild_index(corpus: Corpus, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Rebuild the index from the episode groups (the slow path, for a lost or damaged index).

    Opens every group once. Runs under the exclusive lock; the new index gets a new epoch, so
    snapshots recorded against the old one are detected as not replayable by generation.
    """
    lay = corpus.layout
    entries = []
    with flocked(lay.lock, exclusive=True):
        for e in sorted(os.scandir(lay.episodes), key=lambda e: e.name):
            if not e.is_dir():
                continue
            try:
                meta = zarr.open_group(lay.episode(e.name), mode="r").attrs[EPISODE_ATTR]
            except Exception as err:
                raise CorpusError(f"{lay.episode(e.name)}: unreadable metadata ({err})") from err
            entries.append(entry_from_meta(dict(meta)))
            if progress is not None:
                progress(1)
        corpus.index.rebuild(entries)
    return {"episodes": len(entries), "epoch": corpus.index.epoch()}
