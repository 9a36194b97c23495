"""A snapshot: the exact set of episodes a training run used, named so it can be replayed.

A snapshot is (index epoch, generation, filter). Replaying it selects the same rows; the hash of
the episode ids proves it. A run stores `Snapshot.to_json()` in its lineage.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from flywheel.corpus.index import Filter, IndexEntry
from flywheel.corpus.stats import KeyStats, merge_all


def episode_set_hash(episode_ids: list[str] | tuple[str, ...]) -> str:
    """Order-independent name of a set of episodes."""
    h = hashlib.sha256()
    for i in sorted(episode_ids):
        h.update(i.encode() + b"\n")
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Episodes selected by `filter` from the index at `generation` of index `epoch`."""

    corpus: str
    epoch: str
    generation: int
    filter: Filter
    entries: tuple[IndexEntry, ...]

    @property
    def episode_ids(self) -> list[str]:
        return [e.episode_id for e in self.entries]

    @property
    def episode_set_hash(self) -> str:
        return episode_set_hash(self.episode_ids)

    @property
    def steps(self) -> int:
        return sum(e.length for e in self.entries)

    def stats(self) -> dict[str, KeyStats]:
        """Global statistics merged from the per-episode ones (no array is read)."""
        return merge_all(
            {k: KeyStats.from_json(v) for k, v in e.meta["stats"].items()} for e in self.entries
        )

    def to_json(self) -> dict[str, Any]:
        """What a training run records to be reproducible."""
        return {
            "corpus": self.corpus,
            "epoch": self.epoch,
            "generation": self.generation,
            "filter": self.filter.to_json(),
            "episodes": len(self.entries),
            "steps": self.steps,
            "episode_set_hash": self.episode_set_hash,
        }
