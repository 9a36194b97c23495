"""The plain-directory format: the easy path for a custom recorder.

One folder per episode; anything that can write JSON, an `.npz` and a video can produce it:

    episode_0001/
      episode.json           {"control_hz": 30, "task": "pick", "robot": "arm7", ...}
      lowdim.npz             timestamp (N,), action (N, A), one array per observation,
                             optional reward (N,), optional NAME.timestamp for an array
                             recorded at its own rate
      front.mp4              one video per camera (mp4, avi, mkv, mov)
      front.timestamps.npy   optional (F,) capture time of each frame, same clock as
                             `timestamp`; without it frame i is at timestamp[0] + its pts

Streams may run at any rate; they are aligned onto the `control_hz` grid like a ROS bag.
A folder of such folders is a dataset. See docs/ingest.md.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.ingest.alignment import Stream
from flywheel.ingest.assemble import Recording
from flywheel.ingest.config import as_label, as_name
from flywheel.ingest.errors import IngestError
from flywheel.ingest.frames import ArrayFrames
from flywheel.ingest.hashing import SourceHash
from flywheel.ingest.sources import IngestContext, SourceEpisode
from flywheel.ingest.video import decode_file

name = "dir"
META = "episode.json"
LOWDIM = "lowdim.npz"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
RESERVED = {"timestamp", "action", "reward"}
META_KEYS = {
    "control_hz", "task", "robot", "operator", "success", "instruction", "latency_s",
}  # fmt: skip


def detect(path: Path) -> bool:
    """An episode folder (`episode.json`), or a folder of them."""
    return path.is_dir() and ((path / META).is_file() or bool(_episode_dirs(path)))


def _episode_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and (p / META).is_file())


def episodes(path: Path, ctx: IngestContext) -> Iterator[SourceEpisode]:
    """One episode per folder with an `episode.json`."""
    for folder in [path] if (path / META).is_file() else _episode_dirs(path):
        yield _episode(folder, ctx)


def _episode(folder: Path, ctx: IngestContext) -> SourceEpisode:
    label = str(folder)
    meta_file = folder / META
    try:
        meta = json.loads(meta_file.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return SourceEpisode(
            source=label, error=IngestError(str(meta_file), "(file)", f"unreadable: {e}")
        )
    task = ctx.config.task or as_label(meta.get("task") or folder.parent.name)
    robot = ctx.config.robot or as_label(meta.get("robot") or "unknown")
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    h = SourceHash("dir").add(task, robot).file(meta_file)
    for p in sorted(folder.iterdir()):
        if p.is_file() and p != meta_file and (p.suffix in (".npz", ".npy") or p in videos):
            h.add(p.name).file(p)
    return SourceEpisode(
        source=label,
        source_hash=h.value(),
        read=lambda: _recording(folder, meta, videos, task, robot, ctx),
    )


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise IngestError(str(path), "(file)", "missing: every episode needs lowdim.npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise IngestError(str(path), "(file)", f"unreadable npz: {type(e).__name__}: {e}") from None


def _recording(
    folder: Path,
    meta: dict[str, Any],
    videos: list[Path],
    task: str,
    robot: str,
    ctx: IngestContext,
) -> Recording:
    meta_file = str(folder / META)
    hz = ctx.config.control_hz or meta.get("control_hz")
    if not isinstance(hz, int | float) or not hz > 0:
        raise IngestError(meta_file, "control_hz", f"missing or not a positive number ({hz!r})")
    z = _load_npz(folder / LOWDIM)
    file = str(folder / LOWDIM)
    if "timestamp" not in z:
        raise IngestError(file, "timestamp", f"missing key (has {sorted(z)})")
    if "action" not in z:
        raise IngestError(file, "action", f"missing key (has {sorted(z)})")
    t = np.asarray(z["timestamp"], dtype=np.float64).reshape(-1)
    latency = meta.get("latency_s") or {}
    streams: list[Stream] = []
    for k, v in z.items():
        if k == "timestamp" or k.endswith(".timestamp"):
            continue
        own = z.get(f"{k}.timestamp")
        times = t if own is None else np.asarray(own, dtype=np.float64).reshape(-1)
        field = k if own is None else f"{k} (with {k}.timestamp)"
        if len(v) != len(times):
            raise IngestError(file, k, f"{len(v)} rows but {len(times)} timestamps")
        key = k if k in ("action", "reward") else f"obs/{as_name(k)}"
        streams.append(
            Stream(
                key=key,
                field=field,
                file=file,
                times=times,
                values=v,
                latency_s=float(latency.get(k, 0.0)),
            )
        )
    if not any(s.key.startswith("obs/") for s in streams) and not videos:
        raise IngestError(file, "(observations)", "missing: no observation arrays and no videos")
    cams = meta.get("cameras") or {}
    for vid in videos:
        cam = as_name(vid.stem)
        dec = decode_file(vid, vid.name, lambda native, c=cam: ctx.frame_size(c, native))
        ts_file = vid.with_name(f"{vid.stem}.timestamps.npy")
        if ts_file.is_file():
            try:
                times = np.load(ts_file, allow_pickle=False).astype(np.float64).reshape(-1)
            except (OSError, ValueError) as e:
                raise IngestError(str(ts_file), "(file)", f"unreadable: {e}") from None
            other = f"{ts_file.name} has {len(times)}"
            dec.expect_frames(len(times), other, file=str(vid), field=vid.name)
        else:
            times = (t[0] if len(t) else 0.0) + dec.times
        lat = (cams.get(vid.stem) or {}).get("latency_s", latency.get(vid.stem, 0.0))
        streams.append(
            Stream(
                key=f"images/{cam}",
                field=vid.name,
                file=str(vid),
                times=times,
                values=ArrayFrames(dec.frames),
                latency_s=float(lat),
            )
        )
    success = meta.get("success")
    if success not in (True, False, None):
        raise IngestError(meta_file, "success", f"{success!r} is not true, false or null")
    return Recording(
        source=str(folder),
        file=file,
        streams=streams,
        control_hz=float(hz),
        task=task,
        robot=robot,
        operator=ctx.config.operator or meta.get("operator"),
        success=success,
        info={
            "format": "dir",
            "folder": str(folder),
            "instruction": meta.get("instruction"),
            "metadata": {k: v for k, v in meta.items() if k not in META_KEYS},
        },
    )
