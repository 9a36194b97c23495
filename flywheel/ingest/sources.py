"""The contract between format adapters and the runner: what one source episode looks like.

An adapter turns a path into `SourceEpisode`s: a name, a content hash computed from cheap reads,
and a `read()` that does the expensive part (decoding video). The runner checks the hash against
the corpus first, so a re-run decodes nothing it already has. A source that cannot even be
listed (unreadable file, unknown layout) becomes one `SourceEpisode` carrying its error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from flywheel.ingest.assemble import FrameSizer, Recording
from flywheel.ingest.config import IngestConfig
from flywheel.ingest.errors import IngestError


@dataclass(frozen=True, kw_only=True)
class SourceEpisode:
    """One episode of a source, not yet decoded."""

    source: str
    """How it is named in reports and quarantine: a file, or `file#episode`."""
    source_hash: str | None = None
    """Content hash (None when the source could not be read far enough to compute it)."""
    read: Callable[[], Recording] | None = None
    """Reads the episode's streams (decodes video); raises IngestError."""
    error: IngestError | None = None
    """Set instead of `read` when the source failed before any episode could be listed."""


@dataclass(frozen=True, kw_only=True)
class IngestContext:
    """What adapters need from the run: the config, the mapping, and camera sizes."""

    config: IngestConfig
    frame_size: FrameSizer
    """(camera, native size) -> stored size: the corpus spec's, else the config's, else native."""
    mapping: object | None = None
    """The parsed mapping file (`flywheel.ingest.mapping.Mapping`), when one was given."""


class Adapter(Protocol):
    """A format: `detect` a path it can read, list its `episodes`."""

    name: str

    def detect(self, path: Path) -> bool: ...

    def episodes(self, path: Path, ctx: IngestContext) -> Iterator[SourceEpisode]: ...


def failed(source: str | Path, field: str, problem: str) -> SourceEpisode:
    """A source that failed before its episodes could be listed."""
    return SourceEpisode(source=str(source), error=IngestError(str(source), field, problem))
