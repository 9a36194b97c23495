"""Writing one episode: validate, encode, stage as a Zarr group, then publish with one rename.

The order is what makes a commit atomic: everything is written and fsynced under `.staging/`,
the finished folder is renamed into `episodes/` inside the index's write transaction, and the
index row is inserted last. A reader only ever sees indexed episodes, so a writer killed at any
point leaves either nothing visible or a whole episode.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.corpus.episode import Episode, content_hash, episode_stats
from flywheel.corpus.images import encode_frames
from flywheel.corpus.index import IndexEntry
from flywheel.corpus.layout import EPISODE_ATTR, Layout, fsync_dir, fsync_tree
from flywheel.corpus.schema import SCHEMA_VERSION, Feature, FeatureSpec
from flywheel.corpus.zarr_io import write_array, write_group


@dataclass(frozen=True, kw_only=True)
class CommitResult:
    """What `Corpus.append` did."""

    episode_id: str
    """The new episode's id, or the id of the existing episode with the same content."""
    duplicate: bool
    """True when the content was already in the corpus and nothing was written."""


def infer_features(ep: Episode, image_codecs: dict[str, str] | None = None) -> list[Feature]:
    """The features an episode declares, derived from its (validated) arrays."""
    codecs = image_codecs or {}
    out = [
        Feature(name="action", dtype="float32", shape=ep.action.shape[1:], kind="action"),
        Feature(name="reward", dtype="float32", shape=(), kind="reward"),
        Feature(name="terminated", dtype="bool", shape=(), kind="flag"),
        Feature(name="truncated", dtype="bool", shape=(), kind="flag"),
        Feature(name="timestamp", dtype="float64", shape=(), kind="time", units="s"),
    ]
    out += [
        Feature(name=f"obs/{k}", dtype=str(v.dtype), shape=v.shape[1:], kind="lowdim")
        for k, v in ep.obs.items()
    ]
    out += [
        Feature(
            name=f"images/{k}",
            dtype="uint8",
            shape=v.shape[1:],
            kind="image",
            codec=codecs.get(k, "jpeg"),
        )
        for k, v in ep.images.items()
    ]
    out += [
        Feature(name=f"extras/{k}", dtype=str(v.dtype), shape=v.shape[1:], kind="extra")
        for k, v in ep.extras.items()
    ]
    return out


@dataclass
class EncodedEpisode:
    """A validated episode with its images encoded, its hash and statistics computed."""

    episode: Episode
    features: list[Feature]
    images: dict[str, tuple[np.ndarray, ...]]  # name -> (data, offsets) or (frames,) for raw
    source_hash: str
    stats: dict[str, Any]


def encode(ep: Episode, spec: FeatureSpec) -> EncodedEpisode:
    """Encode images with the codec the spec declares; hash the content as it will be stored.

    Images are hashed after encoding (deterministic for one OpenCV build): hashing 90 MB of raw
    frames with sha256 took longer here than encoding them.
    """
    images: dict[str, tuple[np.ndarray, ...]] = {}
    h = hashlib.sha256()
    for name, frames in ep.images.items():
        feat = spec.features[f"images/{name}"]
        images[name] = (frames,) if feat.codec == "raw" else encode_frames(frames, feat.codec)
    if ep.meta.source_hash is not None:
        source_hash = ep.meta.source_hash
    else:
        lowdim = Episode(**{**ep.__dict__, "images": {}})
        h.update(content_hash(lowdim).encode())
        for name in sorted(images):
            for part in images[name]:
                h.update(memoryview(np.ascontiguousarray(part)).cast("B"))
        source_hash = "sha256:" + h.hexdigest()
    stats = {k: s.to_json() for k, s in episode_stats(ep).items()}
    return EncodedEpisode(
        episode=ep,
        features=[spec.features[f.name] for f in infer_features(ep)],
        images=images,
        source_hash=source_hash,
        stats=stats,
    )


def digest(a: np.ndarray) -> str:
    """Fingerprint of an array's stored values, checked by `verify --deep`."""
    return hashlib.blake2b(
        memoryview(np.ascontiguousarray(a)).cast("B"), digest_size=16
    ).hexdigest()


def _put(root: Path, path: str, a: np.ndarray, compress: bool, digests: dict) -> None:
    a = np.ascontiguousarray(a)
    write_array(root / path, a, compress=compress)
    digests[path] = digest(a)


def stage(
    path: Path, episode_id: str, created: float, enc: EncodedEpisode, *, durable: bool
) -> IndexEntry:
    """Write the whole episode as a Zarr group at `path` (under `.staging/`); return its row.

    The caller holds an flock on the (already created, empty) folder while this runs and until
    the commit, so that `repair` can tell a live writer from a dead one.
    """
    ep = enc.episode
    digests: dict[str, str] = {}
    codec = {f.name: f.codec for f in enc.features}
    for sub in ("obs", "images", "extras"):
        write_group(path / sub)
    for k, v in ep.obs.items():
        _put(path, f"obs/{k}", v, codec[f"obs/{k}"] == "zstd", digests)
    for k, v in ep.extras.items():
        _put(path, f"extras/{k}", v, codec[f"extras/{k}"] == "zstd", digests)
    for k, parts in enc.images.items():
        cam = {"codec": codec[f"images/{k}"], "frame_shape": list(ep.images[k].shape[1:])}
        write_group(path / "images" / k, cam)
        if len(parts) == 1:
            _put(path, f"images/{k}/frames", parts[0], True, digests)
        else:
            _put(path, f"images/{k}/data", parts[0], False, digests)
            _put(path, f"images/{k}/offsets", parts[1], False, digests)
    for k in ("action", "reward", "terminated", "truncated", "timestamp"):
        _put(path, k, getattr(ep, k), True, digests)
    m = ep.meta
    meta = {
        "episode_id": episode_id,
        "schema_version": SCHEMA_VERSION,
        "source": m.source,
        "task": m.task,
        "robot": m.robot,
        "control_hz": float(m.control_hz),
        "length": ep.length,
        "success": m.success,
        "return": float(np.sum(ep.reward, dtype=np.float64)),
        "policy_version": m.policy_version,
        "operator": m.operator,
        "created": created,
        "source_hash": enc.source_hash,
        "info": m.info,
        "features": sorted(f.name for f in enc.features),
        "stats": enc.stats,
        "digests": digests,
        "writer": {"host": socket.gethostname(), "pid": os.getpid()},
    }
    write_group(path, {EPISODE_ATTR: meta})  # the group's own zarr.json last
    if durable:
        fsync_tree(path)
    return entry_from_meta(meta)


def entry_from_meta(meta: dict[str, Any]) -> IndexEntry:
    """The index row for an episode, from the metadata stored in its group (used by rebuild)."""
    return IndexEntry(
        episode_id=meta["episode_id"],
        source=meta["source"],
        task=meta["task"],
        robot=meta["robot"],
        success=meta["success"],
        length=int(meta["length"]),
        return_=float(meta["return"]),
        policy_version=meta["policy_version"],
        operator=meta["operator"],
        control_hz=float(meta["control_hz"]),
        created=float(meta["created"]),
        source_hash=meta["source_hash"],
        meta={k: v for k, v in meta.items() if k not in ("digests", "writer")},
    )


def staging_path(layout: Layout, episode_id: str) -> Path:
    """Unique per writer: the id is random, the pid tells a human who wrote it."""
    return layout.staging / f"{episode_id}.{os.getpid()}"


def publish(layout: Layout, staged: Path, episode_id: str, *, durable: bool) -> None:
    """The atomic step: one rename from staging into `episodes/`."""
    os.rename(staged, layout.episode(episode_id))
    if durable:
        fsync_dir(layout.episodes)


def discard(staged: Path) -> None:
    """Remove a staging folder that will not be committed (duplicate content, or an error)."""
    shutil.rmtree(staged, ignore_errors=True)
