"""The Zarr episode corpus: every episode the flywheel sees, committed atomically, indexed."""

from flywheel.corpus.cache import TrainingCache
from flywheel.corpus.episode import Episode, EpisodeMeta
from flywheel.corpus.errors import (
    BadEpisodeError,
    CorpusError,
    SchemaVersionError,
    SnapshotMismatchError,
)
from flywheel.corpus.index import Filter, IndexEntry
from flywheel.corpus.samplers import TransitionSampler, WindowSampler
from flywheel.corpus.schema import SCHEMA_VERSION, Feature, FeatureSpec
from flywheel.corpus.snapshot import Snapshot
from flywheel.corpus.stats import KeyStats
from flywheel.corpus.store import CommitResult, Corpus, CorpusConfig

__all__ = [
    "SCHEMA_VERSION",
    "BadEpisodeError",
    "CommitResult",
    "Corpus",
    "CorpusConfig",
    "CorpusError",
    "Episode",
    "EpisodeMeta",
    "Feature",
    "FeatureSpec",
    "Filter",
    "IndexEntry",
    "KeyStats",
    "SchemaVersionError",
    "Snapshot",
    "SnapshotMismatchError",
    "TrainingCache",
    "TransitionSampler",
    "WindowSampler",
]
