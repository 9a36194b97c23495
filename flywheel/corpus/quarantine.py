"""Quarantine: refused input is kept with its reason, never silently dropped.

Each record is a folder `quarantine/<id>/` with `reason.json` (source, episode, key, reason,
time) and, when the input was an in-memory episode, `arrays.npz` with its arrays (plain numeric
arrays, no pickles), so a person can look at what was refused and fix the recorder.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.corpus.episode import Episode, new_episode_id
from flywheel.corpus.errors import BadEpisodeError


@dataclass(frozen=True, kw_only=True)
class QuarantineRecord:
    """One refused input."""

    id: str
    source: str
    """The file, folder or producer the input came from."""
    episode: str
    key: str
    reason: str
    created: float
    copy: str | None = None
    """Path of the kept copy inside the quarantine folder, if one was kept."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Quarantine:
    """The quarantine folder of one corpus."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def add(
        self, *, source: str, error: BadEpisodeError, episode: Episode | None = None
    ) -> QuarantineRecord:
        """Record a refusal; written to a temp folder and renamed, like episodes."""
        qid = new_episode_id()
        tmp = self.root / f".{qid}.tmp"
        tmp.mkdir(parents=True)
        copy = None
        if episode is not None:
            arrays = {}
            for k, v in episode.arrays().items():
                try:
                    arrays[k.replace("/", "__")] = np.asarray(v)
                except Exception:  # a ragged field is part of what is wrong; keep the rest
                    continue
            arrays = {k: v for k, v in arrays.items() if v.dtype != object}
            np.savez(tmp / "arrays.npz", **arrays)
            copy = str(self.root / qid / "arrays.npz")
        rec = QuarantineRecord(
            id=qid,
            source=source,
            episode=error.episode,
            key=error.key,
            reason=error.reason,
            created=time.time(),
            copy=copy,
        )
        (tmp / "reason.json").write_text(json.dumps(rec.to_json(), indent=1))
        os.rename(tmp, self.root / qid)
        return rec

    def list(self) -> list[QuarantineRecord]:
        """All records, oldest first."""
        if not self.root.exists():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            f = d / "reason.json"
            if not d.name.startswith(".") and f.exists():
                out.append(QuarantineRecord(**json.loads(f.read_text())))
        return out
