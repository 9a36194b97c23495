"""Errors a corpus user can act on: each names the episode (or file), the key and the reason."""

from __future__ import annotations


class CorpusError(Exception):
    """Base class of every corpus error."""


class SchemaVersionError(CorpusError):
    """The store (or an episode) was written by a flywheel whose schema this one cannot read."""


class BadEpisodeError(CorpusError, ValueError):
    """An episode was refused before anything was written.

    `episode` is the episode's id or its source, `key` the offending field, `reason` what is wrong.
    """

    def __init__(self, episode: str, key: str, reason: str) -> None:
        self.episode = episode
        self.key = key
        self.reason = reason
        super().__init__(f"episode {episode!r}, key {key!r}: {reason}")


class SnapshotMismatchError(CorpusError):
    """A recorded snapshot no longer matches the index (episodes removed or index rebuilt)."""
