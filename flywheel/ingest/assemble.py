"""From a read recording to a corpus `Episode`: one place for the rules every format shares.

Adapters only read: they turn their files into `Recording`s (streams in the source clock plus
metadata). Everything that must be the same for every format happens here: the control grid,
alignment, NaN/inf checks in the source's own field names, T+1 observations and T actions,
terminal flags, dtype canonicalisation, camera sizes, and the metadata kept in `info`.

Step convention: the grid has T+1 ticks. The observation at every tick is kept; the action at
ticks 0..T-1 is kept, and the action a recorder logged at the last tick (which no observation
follows) goes to `info["final_action"]`, so nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flywheel.corpus import Episode, EpisodeMeta
from flywheel.ingest.alignment import (
    AlignmentConfig,
    Stream,
    align,
    control_grid,
)
from flywheel.ingest.config import as_name
from flywheel.ingest.errors import IngestError
from flywheel.ingest.frames import Size

FrameSizer = Callable[[str, Size], Size]
"""(camera, native size) -> the size the corpus stores that camera at."""


@dataclass(kw_only=True)
class Recording:
    """One source episode as read from its files, before alignment."""

    source: str
    """How the episode is named to people: `path/to/file#3`."""
    file: str
    """The main file (for messages about the episode as a whole)."""
    streams: list[Stream]
    """`obs/*`, `images/*`, `action` (required) and `reward` (optional)."""
    control_hz: float
    task: str
    robot: str
    grid: np.ndarray | None = None
    """(T+1,) tick times when rows define the ticks (tables); None to build one from
    `control_hz` over [start, end]."""
    start: float | None = None
    """First tick; default: when every stream has its first sample (after latency)."""
    end: float | None = None
    """Last tick at or before this; default: the last sample of any stream."""
    operator: str | None = None
    success: bool | None = None
    terminated: np.ndarray | None = None
    """(T,) bool when the source records terminations; else the last step ends the episode
    (terminated if `success`, truncated otherwise)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Source metadata to keep: format, language instruction, joint names, files..."""


def _grid(rec: Recording, cfg: AlignmentConfig) -> np.ndarray:
    if rec.grid is not None:
        g = np.asarray(rec.grid, dtype=np.float64)
        bad = np.flatnonzero(np.diff(g) <= 0)
        if len(bad):
            i = int(bad[0]) + 1
            how = "repeats" if g[i] == g[i - 1] else "goes backwards"
            raise IngestError(
                rec.file,
                "timestamp",
                f"time {how} at row {i} ({g[i]:.6f} s after {g[i - 1]:.6f} s)",
            )
        return g
    firsts, lasts = [], []
    for s in rec.streams:
        if len(s.times) == 0:
            raise IngestError(s.file, s.field, "no samples in this episode")
        lat = s.latency_s + cfg.latency_s.get(s.key, 0.0)
        firsts.append(float(s.times[0]) - lat)
        lasts.append(float(s.times[-1]) - lat)
    start = max(firsts) if rec.start is None else rec.start
    end = max(lasts) if rec.end is None else rec.end
    return control_grid(start, end, rec.control_hz)


def _check_finite(s: Stream) -> None:
    v = s.values
    if not isinstance(v, np.ndarray):
        return
    if v.dtype.kind not in "fiub":
        raise IngestError(s.file, s.field, f"dtype {v.dtype} is not numeric")
    if v.dtype.kind == "f" and not np.isfinite(v).all():
        row = int(np.argwhere(~np.isfinite(v))[0][0])
        t = float(s.times[row]) if row < len(s.times) else float("nan")
        raise IngestError(s.file, s.field, f"NaN or inf at row {row} (t={t:.6f} s)")


def _canonical(a: np.ndarray) -> np.ndarray:
    """Floats as float32 (what training reads; one dtype per key across formats)."""
    return a.astype(np.float32) if a.dtype.kind == "f" else a


def assemble(rec: Recording, cfg: AlignmentConfig, frame_size: FrameSizer) -> Episode:
    """Align, check and build the corpus episode; raises IngestError naming file and field."""
    keys = [s.key for s in rec.streams]
    if "action" not in keys:
        raise IngestError(rec.file, "action", "missing: no action stream in this episode")
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise IngestError(rec.file, dup, "two source fields map to the same corpus key")
    for s in rec.streams:
        _check_finite(s)
        if isinstance(s.values, np.ndarray) and len(s.values) != len(s.times):
            raise IngestError(
                s.file, s.field, f"{len(s.values)} values but {len(s.times)} timestamps"
            )
    grid = _grid(rec, cfg)
    if len(grid) < 2:
        raise IngestError(
            rec.file, "timestamp", f"zero-length episode: {len(grid)} tick(s), need at least 2"
        )
    T = len(grid) - 1
    # a stream with T rows on a T+1 grid holds one value per step (actions, rewards)
    per_step = {s.key for s in rec.streams if s.on_grid and len(s.times) == T}
    aligned_streams = [
        Stream(**{**s.__dict__, "times": np.append(s.times, grid[-1]), "values": None})
        if s.key in per_step
        else s
        for s in rec.streams
    ]
    al = align(aligned_streams, grid, cfg, control_hz=rec.control_hz)

    obs: dict[str, np.ndarray] = {}
    images: dict[str, np.ndarray] = {}
    extras: dict[str, np.ndarray] = {}
    info: dict[str, Any] = dict(rec.info)
    fields: dict[str, str] = {}
    action = reward = None
    for s in rec.streams:
        a = al.streams[s.key]
        fields[s.key] = s.field
        if s.key.startswith("images/"):
            cam = s.key[len("images/") :]
            size = frame_size(cam, s.values.native_size)
            uniq, inverse = np.unique(a.index, return_inverse=True)
            try:
                frames = s.values.load(uniq, size)
            except ValueError as e:
                raise IngestError(s.file, s.field, f"undecodable frame: {e}") from None
            # indices never decrease, so all-unique means one frame per tick: no copy needed
            images[cam] = frames if len(uniq) == len(a.index) else frames[inverse]
        elif s.key in per_step:
            v = _canonical(np.asarray(s.values))
            if s.key == "action":
                action = v
            elif s.key == "reward":
                reward = v
            continue
        else:
            v = _canonical(np.asarray(s.values)[a.index])
            if s.key == "action":
                action, info["final_action"] = v[:T], v[T].tolist()
            elif s.key == "reward":
                reward, info["final_reward"] = v[:T], v[T].tolist()
            else:
                obs[s.key[len("obs/") :]] = v
        if not a.on_grid:
            name = as_name(s.key.replace("/", "_"))
            extras[f"ts_{name}"[:64]] = a.source_time
            extras[f"stale_{name}"[:64]] = a.staleness.astype(np.float32)
    assert action is not None
    action = action.astype(np.float32, copy=False)  # discrete (int/bool) commands included
    if action.ndim == 1:
        action = action[:, None]
    if reward is None:
        reward = np.zeros(T, dtype=np.float32)
        info["reward_source"] = "none recorded (zeros)"
    elif reward.ndim > 1 and reward.shape[1:] != (1,):
        s = next(s for s in rec.streams if s.key == "reward")
        raise IngestError(
            s.file, s.field, f"shape mismatch: reward must be scalar, got {reward.shape[1:]}"
        )
    reward = reward.reshape(T).astype(np.float32, copy=False)
    if rec.terminated is not None:
        terminated = np.asarray(rec.terminated, dtype=bool)
        if terminated.shape != (T,):
            raise IngestError(
                rec.file, "terminated", f"shape {terminated.shape}, expected ({T},) one per step"
            )
    else:
        terminated = np.zeros(T, dtype=bool)
        terminated[-1] = rec.success is True
    truncated = np.zeros(T, dtype=bool)
    truncated[-1] = not terminated[-1]
    info.update(
        source_file=rec.source,
        cameras=sorted(images),
        fields=fields,
        alignment=al.report(),
    )
    return Episode(
        obs=obs,
        images=images,
        action=action,
        reward=reward,
        terminated=terminated,
        truncated=truncated,
        timestamp=grid - grid[0],
        extras=extras,
        meta=EpisodeMeta(
            source="real",
            task=rec.task,
            robot=rec.robot,
            control_hz=float(rec.control_hz),
            success=rec.success,
            operator=rec.operator,
            info=info,
        ),
    )
