"""DROID-style episodes: a folder with `trajectory.h5`, one mp4 per camera, and metadata.

The layout (as DROID records it): `trajectory.h5` holds `observation/robot_state/*`,
`action/*` and `observation/timestamp/...` in milliseconds; `recordings/MP4/<serial>.mp4` holds
one camera (frame i belongs to step i, its capture time in
`observation/timestamp/cameras/<serial>_estimated_capture`); `metadata*.json` holds `success`,
`user` (the operator) and `current_task` (the language instruction). Steps are the grid;
cameras are aligned to it by capture time, so a late frame shows up as staleness.
"""

from __future__ import annotations

import json
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

ACTION = ("cartesian_position", "gripper_position")
"""Action keys when `action` is a group: end-effector target and gripper, as DROID trains on."""


def _ms(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64) / 1000.0


def episode(f: Any, h5: Path, folder: Path, ctx: IngestContext) -> SourceEpisode:
    """The one episode of an open `trajectory.h5`; arrays are read now (for the hash)."""
    from flywheel.ingest.hdf5 import leaves, read_dataset

    label = str(folder)
    file = str(h5)
    meta: dict[str, Any] = {}
    for mf in sorted(folder.glob("metadata*.json")):
        try:
            meta = json.loads(mf.read_text())
        except (OSError, ValueError) as e:
            return SourceEpisode(
                source=label, error=IngestError(str(mf), "(file)", f"unreadable JSON: {e}")
            )
    videos = sorted(
        p for p in (folder / "recordings" / "MP4").glob("*.mp4") if "stereo" not in p.stem
    )
    try:
        arrays = {k: read_dataset(v, file, k) for k, v in leaves(f).items()}
    except IngestError as e:
        return SourceEpisode(source=label, error=e)
    task = ctx.config.task or as_label(meta.get("task") or "droid")
    robot = ctx.config.robot or as_label(meta.get("robot_serial") or "franka")
    h = SourceHash("droid").add(task, robot).file(h5)
    for v in videos:
        h.add(v.name).file(v)
    return SourceEpisode(
        source=label,
        source_hash=h.value(),
        read=lambda: _recording(arrays, meta, videos, label, file, task, robot, ctx),
    )


def _recording(
    a: dict[str, np.ndarray],
    meta: dict[str, Any],
    videos: list[Path],
    label: str,
    file: str,
    task: str,
    robot: str,
    ctx: IngestContext,
) -> Recording:
    if "action" in a:
        action, action_fields = a["action"], ["action"]
    else:
        keys = [f"action/{k}" for k in ACTION if f"action/{k}" in a]
        if not keys:
            keys = sorted(k for k in a if k.startswith("action/") and k.count("/") == 1)
        if not keys:
            raise IngestError(file, "action", "missing: no action datasets")
        n0 = len(a[keys[0]])
        for k in keys:
            if len(a[k]) != n0:
                raise IngestError(file, k, f"{len(a[k])} rows, {keys[0]} has {n0}")
        action = np.concatenate(
            [np.asarray(a[k], dtype=np.float64).reshape(n0, -1) for k in keys], 1
        )
        action_fields = keys
    n = len(action)
    if n < 2:
        raise IngestError(file, action_fields[0], f"zero-length episode ({n} step(s))")
    ts = "observation/timestamp/"
    if f"{ts}control/step_start" in a:
        grid, clock = _ms(a[f"{ts}control/step_start"]), f"{ts}control/step_start"
    elif f"{ts}robot_state/robot_timestamp_seconds" in a:
        sec = a[f"{ts}robot_state/robot_timestamp_seconds"].astype(np.float64)
        nanos = a.get(f"{ts}robot_state/robot_timestamp_nanos", np.zeros_like(sec)).astype(
            np.float64
        )
        grid, clock = sec + nanos * 1e-9, f"{ts}robot_state/robot_timestamp_seconds"
    else:
        hz = ctx.config.control_hz or meta.get("control_hz") or 15.0
        grid, clock = np.arange(n) / float(hz), "(none: steps at control_hz)"
    if len(grid) != n:
        raise IngestError(file, clock, f"{len(grid)} timestamps for {n} steps")
    hz = ctx.config.control_hz or meta.get("control_hz")
    if not hz:  # the mean rate over the episode: millisecond stamps make single intervals coarse
        span = float(grid[-1] - grid[0])
        hz = round((n - 1) / span, 1) if span > 0 else 15.0
    streams = [
        Stream(
            key="action",
            field="+".join(action_fields),
            file=file,
            times=grid,
            values=action,
            on_grid=True,
        )
    ]
    for k, v in a.items():
        if not k.startswith("observation/") or k.startswith(ts) or "/controller_info/" in k:
            continue
        if "camera" in k or v.dtype.kind not in "fiub" or v.ndim > 2:
            continue
        if len(v) != n:
            raise IngestError(file, k, f"{len(v)} rows for {n} steps")
        key = "obs/" + as_name(k.removeprefix("observation/").removeprefix("robot_state/"))
        streams.append(Stream(key=key, field=k, file=file, times=grid, values=v, on_grid=True))
    for vid in videos:
        cam = as_name(f"cam_{vid.stem}" if vid.stem[:1].isdigit() else vid.stem)  # DROID: serials
        dec = decode_file(vid, vid.stem, lambda native, c=cam: ctx.frame_size(c, native))
        cap = f"{ts}cameras/{vid.stem}_estimated_capture"
        if cap in a:
            times = _ms(a[cap])
            dec.expect_frames(len(times), f"{cap} has {len(times)}", file=str(vid), field=vid.stem)
        else:
            dec.expect_frames(n, f"trajectory has {n} steps", file=str(vid), field=vid.stem)
            times = grid
        streams.append(
            Stream(
                key=f"images/{cam}",
                field=vid.stem,
                file=str(vid),
                times=times,
                values=ArrayFrames(dec.frames),
                on_grid=cap not in a,
            )
        )
    ci = "observation/controller_info/"
    success = meta.get("success")
    if success is None and f"{ci}success" in a:
        success = bool(np.any(a[f"{ci}success"])) or (
            False if np.any(a.get(f"{ci}failure", [])) else None
        )
    return Recording(
        source=label,
        file=file,
        streams=streams,
        control_hz=float(hz),
        grid=grid,
        task=task,
        robot=robot,
        operator=ctx.config.operator or meta.get("user"),
        success=success if success in (True, False) else None,
        info={
            "format": "droid",
            "instruction": meta.get("current_task") or meta.get("language_instruction"),
            "action_fields": action_fields,
            "clock": clock,
            "metadata": {k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)},
        },
    )
