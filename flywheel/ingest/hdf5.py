"""HDF5 recordings: robomimic files (`data/demo_i/...`) and DROID-style `trajectory.h5` folders.

robomimic keeps `obs` and `next_obs` per step, so an episode of N steps has N+1 observations
and nothing is dropped; `dones` become `terminated`. Its simulator `states` have N rows, not
N+1, so they are listed in `info["skipped"]` rather than padded with made-up values.
DROID-style folders are read by `flywheel.ingest.droid`; this module opens the file and picks
the layout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.ingest import droid
from flywheel.ingest.alignment import Stream
from flywheel.ingest.assemble import Recording
from flywheel.ingest.config import as_label, as_name
from flywheel.ingest.errors import IngestError
from flywheel.ingest.frames import ArrayFrames
from flywheel.ingest.hashing import SourceHash
from flywheel.ingest.sources import IngestContext, SourceEpisode

name = "hdf5"
SUFFIXES = (".h5", ".hdf5", ".he5")


def detect(path: Path) -> bool:
    """An HDF5 file, or a DROID-style folder holding `trajectory.h5`."""
    if path.is_dir():
        return (path / "trajectory.h5").is_file()
    if path.suffix.lower() not in SUFFIXES:
        return False
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def _open(path: Path) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise IngestError(str(path), "(file)", f"unreadable HDF5: {e}") from None


def read_dataset(ds: Any, file: str, key: str) -> np.ndarray:
    try:
        return ds[()]
    except (OSError, ValueError, KeyError) as e:  # truncated or corrupt chunks
        raise IngestError(file, key, f"unreadable dataset: {e}") from None


def episodes(path: Path, ctx: IngestContext) -> Iterator[SourceEpisode]:
    """robomimic demos of one file, or the one DROID-style episode of a folder/file."""
    h5 = path / "trajectory.h5" if path.is_dir() else path
    try:
        f = _open(h5)
    except IngestError as e:
        yield SourceEpisode(source=str(path), error=e)
        return
    with f:
        if "data" in f:
            yield from _robomimic(f, h5, ctx)
        elif "observation" in f and "action" in f:
            yield droid.episode(f, h5, path if path.is_dir() else h5.parent, ctx)
        else:
            yield SourceEpisode(
                source=str(path),
                error=IngestError(
                    str(h5),
                    "(layout)",
                    f"neither robomimic (`data/demo_i`) nor DROID-style "
                    f"(`observation`, `action`); top-level keys: {sorted(f)}",
                ),
            )


def leaves(group: Any, prefix: str = "") -> dict[str, Any]:
    import h5py

    out = {}
    for k, v in group.items():
        if isinstance(v, h5py.Group):
            out.update(leaves(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _env_args(f: Any) -> dict[str, Any]:
    raw = f["data"].attrs.get("env_args")
    if raw is None:
        return {}
    try:
        return json.loads(raw if isinstance(raw, str) else raw.decode())
    except (ValueError, AttributeError):
        return {}


def _robomimic(f: Any, h5: Path, ctx: IngestContext) -> Iterator[SourceEpisode]:
    env = _env_args(f)
    kwargs = env.get("env_kwargs", {})
    hz = ctx.config.control_hz or kwargs.get("control_freq")
    task = ctx.config.task or as_label(env.get("env_name") or h5.stem)
    robots = kwargs.get("robots")
    robot = ctx.config.robot or as_label(
        (robots[0] if isinstance(robots, list) and robots else robots) or "unknown"
    )
    demos = sorted(
        (k for k in f["data"] if k.startswith("demo")),
        key=lambda k: (len(k), k),  # demo_2 before demo_10
    )
    if not demos:
        yield SourceEpisode(
            source=str(h5), error=IngestError(str(h5), "data", "no `demo_*` groups")
        )
    file = str(h5)
    for demo in demos:
        label = f"{h5}#{demo}"
        try:
            g = f["data"][demo]
            arrays = {k: read_dataset(v, file, f"data/{demo}/{k}") for k, v in leaves(g).items()}
        except IngestError as e:
            yield SourceEpisode(source=label, error=e)
            continue
        h = SourceHash("robomimic").add(demo, task, robot)
        for k in sorted(arrays):
            h.add(k).array(arrays[k])
        yield SourceEpisode(
            source=label,
            source_hash=h.value(),
            read=lambda a=arrays, d=demo, lb=label: _robomimic_recording(
                a, d, lb, file, hz, task, robot, env, ctx
            ),
        )


def _robomimic_recording(
    a: dict[str, np.ndarray],
    demo: str,
    label: str,
    file: str,
    hz: float | None,
    task: str,
    robot: str,
    env: dict[str, Any],
    ctx: IngestContext,
) -> Recording:
    if not hz:
        raise IngestError(
            file, "data.attrs.env_args", "no control rate recorded: pass --control-hz"
        )
    where = f"data/{demo}"
    if "actions" not in a:
        raise IngestError(file, f"{where}/actions", "missing key")
    n = len(a["actions"])
    if n == 0:
        raise IngestError(file, f"{where}/actions", "zero-length episode (no steps)")
    obs_keys = sorted(k[4:] for k in a if k.startswith("obs/"))
    if not obs_keys:
        raise IngestError(file, f"{where}/obs", "missing: no observation datasets")
    full = all(f"next_obs/{k}" in a for k in obs_keys)
    T = n if full else n - 1
    grid = np.arange(T + 1) / float(hz)
    streams: list[Stream] = []
    skipped = [k for k in a if k == "states" or (k.startswith("next_obs/") and not full)]
    for k in obs_keys:
        v = a[f"obs/{k}"]
        if len(v) != n:
            raise IngestError(file, f"{where}/obs/{k}", f"{len(v)} rows, actions have {n}")
        if full:
            nxt = a[f"next_obs/{k}"]
            if nxt.shape[1:] != v.shape[1:]:
                raise IngestError(
                    file, f"{where}/next_obs/{k}", f"shape mismatch: {nxt.shape} vs obs {v.shape}"
                )
            v = np.concatenate([v, nxt[-1:]])
        if v.ndim == 4 and v.dtype == np.uint8:
            cam = as_name(k.removesuffix("_image"))
            values: Any = ArrayFrames(v)
            key = f"images/{cam}"
        elif v.ndim >= 3:
            skipped.append(f"obs/{k}")
            continue
        else:
            values, key = v, f"obs/{as_name(k)}"
        streams.append(
            Stream(
                key=key,
                field=f"{where}/obs/{k}",
                file=file,
                times=grid,
                values=values,
                on_grid=True,
            )
        )
    streams.append(
        Stream(
            key="action",
            field=f"{where}/actions",
            file=file,
            times=grid[:n] if full else grid,
            values=a["actions"],
            on_grid=True,
        )
    )
    if "rewards" in a:
        streams.append(
            Stream(
                key="reward",
                field=f"{where}/rewards",
                file=file,
                times=grid[:n] if full else grid,
                values=np.asarray(a["rewards"]).reshape(n),
                on_grid=True,
            )
        )
    terminated = None
    if "dones" in a and full:
        terminated = np.asarray(a["dones"]).reshape(n).astype(bool)
    return Recording(
        source=label,
        file=file,
        streams=streams,
        control_hz=float(hz),
        grid=grid,
        task=task,
        robot=robot,
        operator=ctx.config.operator,
        terminated=terminated,
        info={
            "format": "robomimic",
            "demo": demo,
            "env_name": env.get("env_name"),
            "skipped": skipped,
        },
    )
