"""`ingest()`: every source episode accepted, recognised as a duplicate, or quarantined.

Each source episode stands alone: whatever goes wrong with one (an unreadable file, a video
that lost frames, NaN in a joint) is quarantined with the file, field and problem, and the run
goes on. Commits go through the corpus's atomic append, so a run killed at any point leaves
whole episodes or nothing, and a re-run skips what is there by source hash before decoding it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.corpus import BadEpisodeError, Corpus, Episode
from flywheel.ingest.assemble import assemble
from flywheel.ingest.config import IngestConfig, as_label
from flywheel.ingest.errors import IngestError
from flywheel.ingest.formats import ADAPTERS, describe, detect_format
from flywheel.ingest.frames import Size
from flywheel.ingest.mapping import Mapping, load_mapping
from flywheel.ingest.sources import IngestContext, SourceEpisode

Progress = Callable[[str, str], None]
"""Called after each source episode with (source, outcome): `accepted`, `duplicate`,
`quarantined`."""


@dataclass
class IngestReport:
    """What one run did; `to_json()` is the CLI's `--json` output."""

    accepted: list[str] = field(default_factory=list)
    """Ids of the episodes this run committed."""
    duplicates: list[dict[str, str]] = field(default_factory=list)
    """{source, episode_id} of source episodes the corpus already held."""
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    """{source, field, reason, record} of refused source episodes."""
    flagged: list[dict[str, Any]] = field(default_factory=list)
    """{source, episode_id, flags}: accepted, but with more than 2 % stale ticks somewhere."""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": len(self.duplicates),
            "duplicate_ids": [d["episode_id"] for d in self.duplicates],
            "quarantined": self.quarantined,
            "flagged": self.flagged,
            "seconds": round(self.seconds, 3),
        }


class _Run:
    def __init__(self, corpus: Corpus, config: IngestConfig, progress: Progress | None) -> None:
        self.corpus = corpus
        self.config = config
        self.progress = progress
        self.report = IngestReport()
        corpus.task_keys()  # refresh the feature spec: declared camera sizes win
        self.known = {(r.source, r.key, r.reason): r.id for r in corpus.quarantine.list()}
        mapping: Mapping | None = load_mapping(config.mapping) if config.mapping else None
        self.ctx = IngestContext(config=config, frame_size=self.frame_size, mapping=mapping)

    def frame_size(self, camera: str, native: Size) -> Size:
        """The corpus spec's size for a declared camera, else the config's, else native."""
        f = self.corpus.spec.get(f"images/{camera}")
        if f is not None:
            return int(f.shape[0]), int(f.shape[1])
        return self.config.image_size or native

    def quarantine(
        self, source: str, error: BadEpisodeError, episode: Episode | None = None
    ) -> None:
        key = (source, error.key, error.reason)
        rid = self.known.get(key)
        if rid is None:  # the same refusal from an earlier run is not recorded twice
            rid = self.corpus.quarantine.add(source=source, error=error, episode=episode).id
            self.known[key] = rid
        self.report.quarantined.append(
            {"source": source, "field": error.key, "reason": error.reason, "record": rid}
        )
        self._tick(source, "quarantined")

    def _tick(self, source: str, outcome: str) -> None:
        if self.progress is not None:
            self.progress(source, outcome)

    def source(self, path: Path) -> None:
        fmt = self.config.format if self.config.format != "auto" else detect_format(path)
        if fmt is None or not path.exists():
            err = IngestError(str(path), "(format)", describe(path))
            self.quarantine(str(path), err.to_bad_episode(str(path)))
            return
        listed = ADAPTERS[fmt].episodes(path, self.ctx)
        while True:
            try:
                se = next(listed)
            except StopIteration:
                return
            except Exception as e:  # an adapter bug or an unexpected file: isolate the source
                err = IngestError(str(path), "(read)", f"{type(e).__name__}: {e}")
                self.quarantine(str(path), err.to_bad_episode(str(path)))
                return
            self.episode(se)

    def episode(self, se: SourceEpisode) -> None:
        if se.error is not None:
            self.quarantine(se.source, se.error.to_bad_episode(se.source))
            return
        assert se.read is not None and se.source_hash is not None
        existing = self.corpus.index.find_hash(se.source_hash)
        if existing is not None:
            self.report.duplicates.append({"source": se.source, "episode_id": existing})
            self._tick(se.source, "duplicate")
            return
        try:
            rec = se.read()
            ep = assemble(rec, self.config.alignment, self.frame_size)
        except IngestError as e:
            self.quarantine(se.source, e.to_bad_episode(se.source))
            return
        except Exception as e:  # one bad episode never stops the others
            err = IngestError(se.source, "(read)", f"{type(e).__name__}: {e}")
            self.quarantine(se.source, err.to_bad_episode(se.source))
            return
        meta = ep.meta
        info = dict(meta.info, ingest=self.config.to_json())
        if meta.operator is not None and as_label(meta.operator) != meta.operator:
            info["operator_name"] = meta.operator
        ep.meta = dataclasses.replace(
            meta,
            source_hash=se.source_hash,
            operator=as_label(meta.operator) if meta.operator is not None else None,
            info=info,
        )
        try:
            res = self.corpus.append(ep)
        except BadEpisodeError as e:  # the corpus refused it (spec mismatch, bad label, ...)
            src_field = info.get("fields", {}).get(e.key, e.key)
            files = {s["field"]: s["file"] for s in info["alignment"]["streams"].values()}
            where = files.get(src_field, info.get("source_file", se.source))
            reason = f"{where}: {e.reason}" + (
                f" (corpus key {e.key})" if src_field != e.key else ""
            )
            self.quarantine(se.source, BadEpisodeError(se.source, src_field, reason), ep)
            return
        if res.duplicate:
            self.report.duplicates.append({"source": se.source, "episode_id": res.episode_id})
            self._tick(se.source, "duplicate")
            return
        self.report.accepted.append(res.episode_id)
        flags = info["alignment"]["flags"]
        if flags:
            self.report.flagged.append(
                {"source": se.source, "episode_id": res.episode_id, "flags": flags}
            )
        self._tick(se.source, "accepted")


def ingest(
    sources: list[str | Path],
    corpus: Corpus,
    config: IngestConfig | None = None,
    *,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest every episode of every source into `corpus`; never raises for bad input data.

    Raises MappingError for a malformed mapping file (a mistake for the whole run).
    """
    t0 = time.perf_counter()
    run = _Run(corpus, config or IngestConfig(), progress)
    for s in sources:
        run.source(Path(s))
    run.report.seconds = time.perf_counter() - t0
    return run.report
