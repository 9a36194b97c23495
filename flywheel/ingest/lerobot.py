"""LeRobot datasets on disk, v3.0 and v2.x, read with pyarrow and a video decoder.

v2.x keeps one parquet and one mp4 per camera per episode (`meta/episodes.jsonl`); v3.0 packs
many episodes into chunked parquet files and one mp4 per camera per file, located by the
episode table `meta/episodes/*/*.parquet` (`data/chunk_index`, `videos/<key>/from_timestamp`...).
Rows are the control ticks (`timestamp` column); video frames are matched to rows by time and
counted against the table, so a video that lost frames is refused, not silently stretched.

Hashes: a v2 episode hashes its own files' bytes. A v3 file grows while a recorder appends
episodes to it, so a v3 episode hashes its own rows and its video time ranges instead; either
way the same episode ingested again is a duplicate.
"""

from __future__ import annotations

import json
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
from flywheel.ingest.parquet import column, hash_rows, image_frames, read_table
from flywheel.ingest.sources import IngestContext, SourceEpisode
from flywheel.ingest.video import VideoReader

name = "lerobot"
SKIP_COLUMNS = {"timestamp", "frame_index", "episode_index", "index", "task_index", "next.done"}


def detect(path: Path) -> bool:
    """A dataset root: `meta/info.json` beside `data/`."""
    return path.is_dir() and (path / "meta" / "info.json").is_file()


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise IngestError(str(path), "(file)", f"unreadable JSON: {e}") from None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise IngestError(str(path), "(file)", f"unreadable JSON lines: {e}") from None


class _Dataset:
    """info.json, the episode list and the task strings of one dataset root."""

    def __init__(self, root: Path, ctx: IngestContext) -> None:
        self.root = root
        self.info = _json(root / "meta" / "info.json")
        version = str(self.info.get("codebase_version", ""))
        if not version.startswith(("v2", "v3")):
            raise IngestError(
                str(root / "meta" / "info.json"),
                "codebase_version",
                f"LeRobot dataset version {version or '?'} is not supported (v2.x, v3.0)",
            )
        self.v3 = version.startswith("v3")
        self.version = version
        try:
            self.fps = float(self.info["fps"])
            self.features: dict[str, dict[str, Any]] = dict(self.info["features"])
            self.data_path: str = self.info["data_path"]
        except KeyError as e:
            raise IngestError(str(root / "meta" / "info.json"), str(e), "missing key") from None
        self.video_path: str | None = self.info.get("video_path")
        cfg = ctx.config
        self.task = cfg.task or as_label(root.name)
        self.robot = cfg.robot or as_label(self.info.get("robot_type") or "unknown")
        self.cameras = [k for k, f in self.features.items() if f.get("dtype") == "video"]
        self.images = [k for k, f in self.features.items() if f.get("dtype") == "image"]
        self.episodes = self._episodes_v3() if self.v3 else self._episodes_v2()
        self.tasks = self._tasks()

    def _episodes_v2(self) -> list[dict[str, Any]]:
        return _jsonl(self.root / "meta" / "episodes.jsonl")

    def _episodes_v3(self) -> list[dict[str, Any]]:
        files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not files:
            raise IngestError(str(self.root / "meta" / "episodes"), "(file)", "no episode tables")
        rows: list[dict[str, Any]] = []
        for f in files:
            t = read_table(f)
            keep = [c for c in t.column_names if not c.startswith("stats/")]
            rows += t.select(keep).to_pylist()
        return sorted(rows, key=lambda r: r["episode_index"])

    def _tasks(self) -> dict[int, str]:
        if self.v3:
            path = self.root / "meta" / "tasks.parquet"
            if not path.is_file():
                return {}
            t = read_table(path)
            # the task string is the pandas index in LeRobot 0.4.x, a `task` column from 0.5
            col = "task" if "task" in t.column_names else "__index_level_0__"
            if col not in t.column_names or "task_index" not in t.column_names:
                return {}
            return dict(
                zip(t.column("task_index").to_pylist(), t.column(col).to_pylist(), strict=True)
            )
        path = self.root / "meta" / "tasks.jsonl"
        return {r["task_index"]: r["task"] for r in _jsonl(path)} if path.is_file() else {}

    def _key(self, ep: dict[str, Any], key: str) -> Any:
        """A field of an episode-table row; a missing one names the table."""
        if key not in ep or ep[key] is None:
            where = "meta/episodes/" if self.v3 else "meta/episodes.jsonl"
            raise IngestError(str(self.root / where), key, "missing key in the episode table")
        return ep[key]

    def data_file(self, ep: dict[str, Any]) -> Path:
        i = int(ep["episode_index"])
        if self.v3:
            rel = self.data_path.format(
                chunk_index=self._key(ep, "data/chunk_index"),
                file_index=self._key(ep, "data/file_index"),
            )
        else:
            chunk = i // int(self.info.get("chunks_size", 1000))
            rel = self.data_path.format(episode_chunk=chunk, episode_index=i)
        return self.root / rel

    def video_file(self, ep: dict[str, Any], key: str) -> tuple[Path, float, float]:
        """(file, from, to) of a camera's frames for this episode (v2: the whole file)."""
        if not self.video_path:
            raise IngestError(str(self.root / "meta" / "info.json"), "video_path", "missing key")
        i = int(ep["episode_index"])
        if self.v3:
            rel = self.video_path.format(
                video_key=key,
                chunk_index=self._key(ep, f"videos/{key}/chunk_index"),
                file_index=self._key(ep, f"videos/{key}/file_index"),
            )
            return (
                self.root / rel,
                float(self._key(ep, f"videos/{key}/from_timestamp")),
                float(self._key(ep, f"videos/{key}/to_timestamp")),
            )
        chunk = i // int(self.info.get("chunks_size", 1000))
        rel = self.video_path.format(episode_chunk=chunk, video_key=key, episode_index=i)
        return self.root / rel, 0.0, float("inf")


def episodes(path: Path, ctx: IngestContext) -> Iterator[SourceEpisode]:
    """Every episode of a dataset root, in episode order."""
    try:
        ds = _Dataset(path, ctx)
    except IngestError as e:
        yield SourceEpisode(source=str(path), error=e)
        return
    readers: dict[Path, VideoReader] = {}
    tables: dict[Path, Any] = {}
    try:
        for ep in ds.episodes:
            yield _episode(ds, ep, ctx, readers, tables)
    finally:
        for r in readers.values():
            r.close()


def _rows(ds: _Dataset, ep: dict[str, Any], tables: dict[Path, Any]) -> tuple[Any, Path]:
    """The episode's rows, sorted by frame; a v3 file's table is read once for its episodes."""
    import pyarrow.compute as pc

    file = ds.data_file(ep)
    if file not in tables:
        tables.clear()  # files are visited in order: keep one
        tables[file] = read_table(file)
    t = tables[file]
    if ds.v3:
        if "episode_index" not in t.column_names:
            raise IngestError(str(file), "episode_index", "missing column")
        t = t.filter(pc.equal(t.column("episode_index"), int(ep["episode_index"])))
    if "frame_index" in t.column_names:
        t = t.sort_by("frame_index")
    return t, file


def _episode(
    ds: _Dataset,
    ep: dict[str, Any],
    ctx: IngestContext,
    readers: dict[Path, VideoReader],
    tables: dict[Path, Any],
) -> SourceEpisode:
    i = int(ep.get("episode_index", -1))
    label = f"{ds.root}#{i}"
    try:
        table, file = _rows(ds, ep, tables)
        h = SourceHash(f"lerobot-{ds.version}").add(i, ds.task, ds.robot)
        if ds.v3:
            hash_rows(h, table)
            for key in ds.cameras:
                h.add(key, *(str(x) for x in ds.video_file(ep, key)))
        else:
            h.file(file)
            for key in ds.cameras:
                vf = ds.video_file(ep, key)[0]
                if vf.is_file():
                    h.file(vf)
    except IngestError as e:
        return SourceEpisode(source=label, error=e)
    return SourceEpisode(
        source=label,
        source_hash=h.value(),
        read=lambda: _read(ds, ep, table, file, ctx, readers, label),
    )


def _read(
    ds: _Dataset,
    ep: dict[str, Any],
    table: Any,
    file: Path,
    ctx: IngestContext,
    readers: dict[Path, VideoReader],
    label: str,
) -> Recording:
    f = str(file)
    n = table.num_rows
    if n == 0:
        raise IngestError(f, "episode_index", f"zero-length episode {ep.get('episode_index')}")
    length = ep.get("length")
    if length is not None and int(length) != n:
        raise IngestError(
            f, "length", f"frame count mismatch: the episode table says {length}, data has {n} rows"
        )
    if "frame_index" in table.column_names:
        fi = column(table, "frame_index", f)
        if (fi != np.arange(n)).any():
            row = int(np.flatnonzero(fi != np.arange(n))[0])
            raise IngestError(
                f, "frame_index", f"rows are not frames 0..{n - 1}: row {row} is {fi[row]}"
            )
    grid = column(table, "timestamp", f).astype(np.float64).reshape(-1)
    streams: list[Stream] = []
    names: dict[str, Any] = {}
    videos: dict[str, Any] = {}
    success = None
    for c in table.column_names:
        feat = ds.features.get(c, {})
        if c in SKIP_COLUMNS or feat.get("dtype") in ("video", "image"):
            continue
        if c == "next.success":
            success = bool(column(table, c, f).any())
            continue
        if c == "action":
            key = "action"
        elif c == "next.reward":
            key = "reward"
        elif c.startswith("observation."):
            key = "obs/" + as_name(c[len("observation.") :])
        else:
            continue
        values = column(table, c, f)
        streams.append(Stream(key=key, field=c, file=f, times=grid, values=values, on_grid=True))
        if feat.get("names") is not None:
            names[key] = feat["names"]
    for c in ds.images:
        cam = as_name(c.removeprefix("observation.images.").removeprefix("observation."))
        if c not in table.column_names:
            raise IngestError(f, c, "missing column for an image feature")
        streams.append(
            Stream(
                key=f"images/{cam}",
                field=c,
                file=f,
                times=grid,
                values=image_frames(table, c, f),
                on_grid=True,
            )
        )
    for c in ds.cameras:
        cam = as_name(c.removeprefix("observation.images.").removeprefix("observation."))
        path, t0, t1 = ds.video_file(ep, c)
        if path not in readers:
            readers[path] = VideoReader(path, c)
        dec = readers[path].read(
            t0,
            t1,
            lambda native, cam=cam: ctx.frame_size(cam, native),
            ctx.config.alignment.tolerance_s,
        )
        videos[c] = {"file": str(path), "codec": dec.codec, "decoder": dec.backend}
        where = "" if not ds.v3 else f" in [{t0:.3f}, {t1:.3f}) s"
        dec.expect_frames(n, f"table has {n} rows", file=str(path), field=c, where=where)
        streams.append(
            Stream(
                key=f"images/{cam}",
                field=c,
                file=str(path),
                times=dec.times - (t0 if ds.v3 else 0.0),
                values=ArrayFrames(dec.frames),
                rate_hz=ds.fps,
            )
        )
    task_ids = ep.get("tasks") or []
    instruction = task_ids[0] if len(task_ids) == 1 else (task_ids or None)
    if instruction is None and "task_index" in table.column_names:
        ti = int(column(table, "task_index", f)[0])
        instruction = ds.tasks.get(ti)
    return Recording(
        source=label,
        file=f,
        streams=streams,
        control_hz=ds.fps,
        grid=grid,
        task=ds.task,
        robot=ds.robot,
        operator=ctx.config.operator,
        success=success,
        info={
            "format": f"lerobot-{ds.version}",
            "dataset": str(ds.root),
            "episode_index": int(ep["episode_index"]),
            "instruction": instruction,
            "names": names,
            "robot_type": ds.info.get("robot_type"),
            "video": videos,
        },
    )
