"""`Corpus`: open or create a store, append episodes atomically, list, snapshot and read them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.api.asynchronous as zarr_async
from zarr.core.sync import sync as zarr_sync

from flywheel.corpus import writer
from flywheel.corpus.episode import Episode, new_episode_id, validate
from flywheel.corpus.errors import BadEpisodeError, CorpusError, SnapshotMismatchError
from flywheel.corpus.images import decode_frames
from flywheel.corpus.index import EpisodeIndex, Filter, IndexEntry
from flywheel.corpus.layout import EPISODE_ATTR, ROOT_ATTR, Layout, flocked
from flywheel.corpus.quarantine import Quarantine, QuarantineRecord
from flywheel.corpus.schema import SCHEMA_VERSION, Feature, FeatureSpec, check_version
from flywheel.corpus.snapshot import Snapshot


@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    """How a process writes to a corpus (not stored: each writer chooses)."""

    durable: bool = True
    """fsync an episode's files before publishing it, so a power cut can't tear it."""
    image_codecs: dict[str, str] = field(default_factory=dict)
    """Codec for a camera the first time it is seen (`jpeg` default, `png`/`raw` lossless)."""
    strict_features: bool = False
    """Refuse episodes with keys the spec does not declare, instead of declaring them."""


class Corpus:
    """A Zarr v3 episode store with an SQLite index; safe for many processes at once."""

    def __init__(self, path: str | Path, config: CorpusConfig | None = None) -> None:
        self.path = Path(path)
        self.config = config or CorpusConfig()
        self.layout = Layout(self.path)
        if not (self.path / "zarr.json").exists() or not self.layout.index.exists():
            raise CorpusError(
                f"{self.path} is not a flywheel corpus (run `flywheel corpus init {self.path}`)"
            )
        self.index = EpisodeIndex(self.layout.index)
        self.quarantine = Quarantine(self.layout.quarantine)
        self._spec = self._read_root()

    # --- creating and opening -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        features: list[Feature] | None = None,
        config: CorpusConfig | None = None,
    ) -> Corpus:
        """Create an empty corpus at `path` (which must not hold one already)."""
        layout = Layout(Path(path))
        if (layout.root / "zarr.json").exists():
            raise CorpusError(f"{path} already holds a Zarr store")
        _init_store(layout, FeatureSpec().merged(features or []))
        return cls(path, config)

    @classmethod
    def open_or_create(cls, path: str | Path, config: CorpusConfig | None = None) -> Corpus:
        """Open the corpus at `path`, creating it first if the folder holds none.

        Safe when several processes do this at once: creation happens under the corpus lock.
        """
        _init_store(Layout(Path(path)), FeatureSpec())
        return cls(path, config)

    def _read_root(self) -> FeatureSpec:
        """Read root metadata: check the version, refresh the cached spec and task keys."""
        attrs = zarr.open_group(self.path, mode="r").attrs.asdict()
        if ROOT_ATTR not in attrs:
            raise CorpusError(f"{self.path}: root metadata `{ROOT_ATTR}` is missing")
        check_version(attrs[ROOT_ATTR].get("schema_version", "?"), where=str(self.path))
        self._tasks: dict[str, list[str]] = dict(attrs[ROOT_ATTR].get("tasks", {}))
        return FeatureSpec.from_json(attrs[ROOT_ATTR]["features"])

    @property
    def spec(self) -> FeatureSpec:
        """The feature spec as last read (refreshed when this process registers features)."""
        return self._spec

    @property
    def schema_version(self) -> str:
        root = zarr.open_group(self.path, mode="r").attrs.asdict()[ROOT_ATTR]
        return str(root["schema_version"])

    def _update_root(self, features: list[Feature], task_keys: dict[str, list[str]]) -> None:
        """Add features and per-task key sets to the root metadata, under the exclusive lock."""
        with flocked(self.layout.lock, exclusive=True):
            root = zarr.open_group(self.path, mode="r+")
            meta = dict(root.attrs[ROOT_ATTR])
            spec = FeatureSpec.from_json(meta["features"]).merged(features)
            tasks = dict(meta.get("tasks", {}))
            for task, keys in task_keys.items():
                if tasks.setdefault(task, keys) != keys:
                    raise ValueError(f"task {task} already declares observation keys {tasks[task]}")
            meta["features"], meta["tasks"] = spec.to_json(), tasks
            root.attrs[ROOT_ATTR] = meta
        self._spec, self._tasks = spec, tasks

    def register_features(self, features: list[Feature]) -> FeatureSpec:
        """Declare features; identical re-declarations are no-ops, conflicting ones refused."""
        self._spec = self._read_root()
        if not all(self._spec.get(f.name) == f for f in features):
            self._update_root(features, {})
        return self._spec

    def task_keys(self) -> dict[str, list[str]]:
        """Low-dim observation keys each task's episodes must all have (set by its first one)."""
        self._spec = self._read_root()
        return dict(self._tasks)

    # --- writing ---------------------------------------------------------------------------

    def _check_against_spec(self, ep: Episode, name: str) -> None:
        """Compare the episode's arrays with the declared features; declare new ones.

        Low-dim observation keys are fixed per task by the task's first episode (a training
        cache needs every episode of a task to have them); cameras and extras are optional.
        The root metadata is re-read only when this process has not seen a key or task yet:
        declarations are only ever added, so a cached one stays true.
        """
        declared = writer.infer_features(ep, self.config.image_codecs)
        keys = sorted(f"obs/{k}" for k in ep.obs)
        task = ep.meta.task
        if any(self._spec.get(f.name) is None for f in declared) or task not in self._tasks:
            self._spec = self._read_root()
        new = []
        for f in declared:
            old = self._spec.get(f.name)
            if old is None:
                if self.config.strict_features:
                    raise BadEpisodeError(name, f.name, "not declared in the corpus feature spec")
                new.append(f)
            elif (old.dtype, old.shape) != (f.dtype, f.shape):
                raise BadEpisodeError(
                    name,
                    f.name,
                    f"dtype/shape {f.dtype}{list(f.shape)} does not match the corpus spec "
                    f"{old.dtype}{list(old.shape)}",
                )
        required = self._tasks.get(task)
        if required is not None and required != keys:
            missing = sorted(set(required) - set(keys))
            if missing:
                raise BadEpisodeError(
                    name, missing[0], f"missing (task {task} requires {required})"
                )
            extra = sorted(set(keys) - set(required))[0]
            raise BadEpisodeError(name, extra, f"not an observation key of task {task} {required}")
        if new or required is None:
            try:
                self._update_root(new, {task: keys} if required is None else {})
            except ValueError as e:  # another writer declared it differently meanwhile
                raise BadEpisodeError(name, new[0].name if new else "obs", str(e)) from None

    def append(self, episode: Episode) -> CommitResult:
        """Validate, stage and atomically commit one episode; a duplicate writes nothing.

        Raises BadEpisodeError (naming episode, key and reason) before writing anything.
        """
        ep = validate(episode)
        name = f"{ep.meta.source}/{ep.meta.task}"
        self._check_against_spec(ep, name)
        enc = writer.encode(ep, self._spec)
        existing = self.index.find_hash(enc.source_hash)
        if existing is not None:
            return writer.CommitResult(episode_id=existing, duplicate=True)
        created = time.time()
        episode_id = new_episode_id(created)
        staged = writer.staging_path(self.layout, episode_id)
        durable = self.config.durable
        staged.mkdir()
        with flocked(staged, exclusive=True):  # tells `repair` this staging folder is alive
            try:
                entry = writer.stage(staged, episode_id, created, enc, durable=durable)
                with flocked(self.layout.lock, exclusive=False):
                    dup = self.index.commit(
                        entry,
                        lambda: writer.publish(self.layout, staged, episode_id, durable=durable),
                    )
            finally:
                writer.discard(staged)  # no-op after a successful rename
        if dup is not None:
            return writer.CommitResult(episode_id=dup, duplicate=True)
        return writer.CommitResult(episode_id=episode_id, duplicate=False)

    def append_or_quarantine(
        self, episode: Episode, *, source: str
    ) -> writer.CommitResult | QuarantineRecord:
        """Like `append`, but a bad episode goes to quarantine with its reason instead of raising."""
        try:
            return self.append(episode)
        except BadEpisodeError as e:
            return self.quarantine.add(source=source, error=e, episode=episode)

    # --- listing and snapshots -------------------------------------------------------------

    def entries(
        self, flt: Filter | None = None, *, generation: int | None = None
    ) -> list[IndexEntry]:
        """Index rows matching `flt` (no episode group is opened)."""
        return self.index.query(flt, generation=generation)

    def snapshot(self, flt: Filter | None = None, *, generation: int | None = None) -> Snapshot:
        """The episodes matching `flt` at `generation` (default: now), named for replay."""
        flt = flt or Filter()
        generation = self.index.generation() if generation is None else generation
        return Snapshot(
            corpus=str(self.path),
            epoch=self.index.epoch(),
            generation=generation,
            filter=flt,
            entries=tuple(self.index.query(flt, generation=generation)),
        )

    def replay(self, recorded: dict[str, Any]) -> Snapshot:
        """The snapshot a run recorded (`Snapshot.to_json()`), checked to be the same episodes."""
        flt = Filter(**recorded.get("filter", {}))
        snap = self.snapshot(flt, generation=int(recorded["generation"]))
        if snap.episode_set_hash != recorded["episode_set_hash"]:
            raise SnapshotMismatchError(
                f"{self.path}: snapshot generation {recorded['generation']} no longer selects the "
                f"recorded episodes (index epoch {recorded.get('epoch')} -> {snap.epoch}); "
                "episodes were removed or the index was rebuilt"
            )
        return snap

    def info(self) -> dict[str, Any]:
        """Totals from index aggregates: constant work per corpus, whatever its size."""
        s = self.index.summary()
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "episodes": s["episodes"],
            "frames": s["steps"],
            "generation": self.index.generation(),
            "epoch": self.index.epoch(),
            "by_source": s["by_source"],
            "by_task": s["by_task"],
            "features": [f.to_json() for f in self._spec.features.values()],
            "quarantined": len(self.quarantine.list()),
        }

    # --- reading ---------------------------------------------------------------------------

    def _committed(self, episode_id: str) -> Path:
        """The folder of a committed episode; CorpusError if there is none."""
        path = self.layout.episode(episode_id)
        if not (path / "zarr.json").exists():
            raise CorpusError(f"{self.path}: no episode {episode_id!r}")
        return path

    def group(self, episode_id: str) -> zarr.Group:
        """The Zarr group of a committed episode."""
        return zarr.open_group(self._committed(episode_id), mode="r")

    def metadata(self, episode_id: str) -> dict[str, Any]:
        """An episode's stored metadata (from its group, not the index)."""
        return dict(self.group(episode_id).attrs[EPISODE_ATTR])

    def read_arrays(
        self, episode_id: str, keys: list[str] | None = None, *, frames: Any = None
    ) -> dict[str, np.ndarray]:
        """Arrays of an episode by path (`obs/x`, `images/front`, `action`, ...), decoded.

        `keys` defaults to every feature the episode has; `frames` picks image frames.
        """
        g = self.group(episode_id)
        features = g.attrs[EPISODE_ATTR]["features"]
        keys = keys or list(features)
        _check_keys(episode_id, features, keys)
        out = {}
        for key in keys:
            try:
                out[key] = self._read_images(g, key, frames) if key.startswith("images/") else g[key][...]  # fmt: skip
            except Exception as e:  # a corrupt chunk surfaces as a bare codec error
                raise _unreadable(self.layout.episode(episode_id), key, e) from e
        return out

    def read_many(self, episode_ids: Sequence[str], keys: Sequence[str]) -> list[dict[str, np.ndarray]]:  # fmt: skip
        """`read_arrays` of many episodes at once, for array keys (not `images/...`).

        Every group, array-metadata and chunk read is in flight together on Zarr's event loop.
        Through the sync API Zarr 3 pays about a millisecond per array, mostly waiting on one
        small file at a time; gathered, a snapshot's low-dim data read 2-3x faster here.
        """
        if any(k.startswith("images/") for k in keys):
            raise ValueError("read_many reads array keys; camera frames go through read_arrays")

        async def one(episode_id: str) -> dict[str, np.ndarray]:
            path = self._committed(episode_id)
            g = await zarr_async.open_group(store=str(path), mode="r")
            _check_keys(episode_id, g.attrs[EPISODE_ATTR]["features"], keys)

            async def read(key: str) -> np.ndarray:
                try:
                    return await (await g.getitem(key)).getitem(...)
                except Exception as e:  # as in read_arrays
                    raise _unreadable(path, key, e) from e

            values = await asyncio.gather(*(read(k) for k in keys))
            return dict(zip(keys, values, strict=True))

        async def all_of(ids: Sequence[str]) -> list[dict[str, np.ndarray]]:
            return await asyncio.gather(*(one(i) for i in ids))

        return zarr_sync(all_of(episode_ids))

    def _read_images(self, g: zarr.Group, key: str, frames: Any) -> np.ndarray:
        cam = g[key]
        if cam.attrs["codec"] == "raw":
            return cam["frames"][...] if frames is None else cam["frames"][frames]
        data, offsets = cam["data"][...], cam["offsets"][...]
        return decode_frames(data, offsets, cam.attrs["frame_shape"], frames)

    def read(self, episode_id: str, *, images: bool = True) -> Episode:
        """A committed episode back as an `Episode` (metadata included)."""
        from flywheel.corpus.episode import EpisodeMeta

        meta = self.metadata(episode_id)
        keys = [k for k in meta["features"] if images or not k.startswith("images/")]
        a = self.read_arrays(episode_id, keys)
        pick = lambda prefix: {k[len(prefix) :]: v for k, v in a.items() if k.startswith(prefix)}  # noqa: E731
        return Episode(
            obs=pick("obs/"),
            images=pick("images/"),
            extras=pick("extras/"),
            action=a["action"],
            reward=a["reward"],
            terminated=a["terminated"],
            truncated=a["truncated"],
            timestamp=a["timestamp"],
            schema_version=meta["schema_version"],
            meta=EpisodeMeta(
                source=meta["source"],
                task=meta["task"],
                robot=meta["robot"],
                control_hz=meta["control_hz"],
                success=meta["success"],
                policy_version=meta["policy_version"],
                operator=meta["operator"],
                info=meta["info"],
                source_hash=meta["source_hash"],
            ),
        )


CommitResult = writer.CommitResult


def _init_store(layout: Layout, spec: FeatureSpec) -> None:
    """Lay out an empty corpus unless one is there; the exclusive lock makes racing inits safe."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with flocked(layout.lock, exclusive=True):
        layout.staging.mkdir(exist_ok=True)
        if not layout.index.exists():
            EpisodeIndex(layout.index).create()
        # mode "a", never "w": zarr's "w" empties the folder, lock file and index included
        root = zarr.open_group(layout.root, mode="a", zarr_format=3)
        if ROOT_ATTR in root.attrs:
            return
        if "episodes" not in root:
            root.create_group("episodes")
        # written last: its presence is what says "this folder is a corpus"
        root.attrs[ROOT_ATTR] = {
            "schema_version": SCHEMA_VERSION,
            "features": spec.to_json(),
            "tasks": {},
            "created": time.time(),
        }


def _check_keys(episode_id: str, features: Sequence[str], keys: Sequence[str]) -> None:
    """CorpusError naming the first of `keys` that the episode does not have."""
    for key in keys:
        if key not in features:
            raise CorpusError(f"episode {episode_id} has no key {key!r}")


def _unreadable(episode: Path, key: str, error: Exception) -> CorpusError:
    """A committed array that cannot be decoded, named by file and key, with what to do."""
    return CorpusError(
        f"{episode}/{key}: unreadable ({type(error).__name__}: {error}); "
        "`flywheel corpus verify --deep` finds corrupt episodes"
    )
