"""Corpus benchmark: commit latency, write throughput, sampling speed, and how cost grows.

    python -m benchmarks.corpus [--quick] [--only commit,throughput,sampling,cache,scaling]

Every figure is measured beside its anchor in the same run, alternating, median of repeats, and
printed as one JSON line on stdout (`ours`, `anchor`, `anchor_value`, `ratio` = ours / anchor).
Human tables go to stderr. Anchors:
- commit latency and write throughput: `np.save` of the same raw arrays (the physical floor),
  and a naive shared-array append layout (one set of Zarr arrays for all episodes plus
  `episode_ends`, as replay buffers in the field do);
- sampling: plain numpy fancy indexing on pre-aligned arrays, and d3rlpy 2.8.1's replay buffer
  (from ./.venv-peers, see scripts/bench_env.sh; skipped with a note when absent);
- cache: building a training cache (gathered Zarr reads) vs reading the same arrays one
  episode at a time through Zarr's sync API;
- scaling: a scan that opens every episode group, which is what the index avoids.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numcodecs
import numpy as np
import zarr

from benchmarks import peers, reporting
from benchmarks.reporting import one_core
from flywheel.corpus import (
    Corpus,
    CorpusConfig,
    Filter,
    TrainingCache,
    TransitionSampler,
)
from flywheel.corpus.layout import EPISODE_ATTR
from flywheel.corpus.maintenance import verify
from flywheel.corpus.synthetic import synthetic_episode


def emit(metric: str, ours: float, anchor: str, anchor_value: float | None, **extra) -> None:
    reporting.emit("corpus", metric, ours, anchor, anchor_value, **extra)


def varied(base, i: int):
    """A copy of `base` with different content (so it is not deduplicated), same shapes."""
    obs = dict(base.obs)
    obs["goal"] = base.obs["goal"] + np.float32(i * 1e-3)
    return type(base)(**{**base.__dict__, "obs": obs})


def np_save(folder: Path, ep) -> None:
    """The physical floor: every raw array written with np.save (no encoding, no fsync)."""
    folder.mkdir()
    for k, a in ep.arrays().items():
        np.save(folder / (k.replace("/", "__") + ".npy"), a)


class NaiveAppend:
    """One set of Zarr arrays for all episodes plus `episode_ends`: the common replay layout.

    Not crash-safe (a killed append leaves arrays longer than episode_ends), which is why the
    corpus does not use it; here it is the speed anchor.
    """

    def __init__(self, path: Path, ep) -> None:
        self.root = zarr.open_group(path, mode="w")
        self.arrays = {}
        zstd = zarr.codecs.ZstdCodec(level=3)
        for k, a in ep.arrays().items():
            chunk = (100, *a.shape[1:]) if a.ndim == 4 else (1000, *a.shape[1:])
            self.arrays[k] = self.root.create_array(
                k.replace("/", "__"),
                shape=(0, *a.shape[1:]),
                dtype=a.dtype,
                chunks=chunk,
                compressors=zstd,
            )
        self.ends = self.root.create_array(
            "episode_ends", shape=(0,), dtype="int64", chunks=(1000,)
        )
        self.n = 0

    def append(self, ep) -> None:
        for k, a in ep.arrays().items():
            self.arrays[k].append(a)
        self.n += ep.length
        self.ends.append(np.array([self.n]))


def bench_commit_and_throughput(quick: bool, tmp: Path) -> None:
    """300-step episodes with two 224x224 cameras: commit latency p95 and frames/s."""
    one_core()
    reps = 8 if quick else 30
    base = synthetic_episode(0, length=300, cameras=("front", "wrist"), image_size=224)
    frames = base.length
    c_durable = Corpus.open_or_create(tmp / "durable.zarr")
    c_fast = Corpus.open_or_create(tmp / "fast.zarr", CorpusConfig(durable=False))
    naive = NaiveAppend(tmp / "naive.zarr", base)
    c_durable.append(varied(base, -1))  # warm-up (feature registration, imports)
    c_fast.append(varied(base, -1))
    t_dur, t_fast, t_save, t_naive = [], [], [], []
    for i in range(reps):
        ep = varied(base, i)
        t = time.perf_counter()
        assert not c_durable.append(ep).duplicate
        t_dur.append(time.perf_counter() - t)
        t = time.perf_counter()
        np_save(tmp / f"npsave{i}", ep)
        t_save.append(time.perf_counter() - t)
        t = time.perf_counter()
        c_fast.append(ep)
        t_fast.append(time.perf_counter() - t)
        t = time.perf_counter()
        naive.append(ep)
        t_naive.append(time.perf_counter() - t)
        shutil.rmtree(tmp / f"npsave{i}")
    p95 = lambda xs: float(np.percentile(xs, 95))  # noqa: E731
    shape = {"steps": 300, "cameras": 2, "image": "224x224", "reps": reps, "cores": 1}
    emit("commit_latency_p95_s", p95(t_dur), "np.save-raw", p95(t_save), floor=0.5, **shape)
    emit(
        "commit_latency_p50_s",
        statistics.median(t_dur),
        "np.save-raw",
        statistics.median(t_save),
        **shape,
    )
    emit("commit_latency_p95_s_no_fsync", p95(t_fast), "np.save-raw", p95(t_save), **shape)
    fps = lambda ts: frames / statistics.median(ts)  # noqa: E731
    emit("write_frames_per_s", fps(t_dur), "np.save-raw", fps(t_save), **shape)
    emit("write_frames_per_s", fps(t_dur), "naive-shared-append", fps(t_naive), **shape)
    emit("write_frames_per_s_no_fsync", fps(t_fast), "naive-shared-append", fps(t_naive), **shape)
    on_disk = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())  # noqa: E731
    emit("bytes_per_episode", on_disk(tmp / "fast.zarr" / "episodes") / (reps + 1), "raw-arrays",
         sum(a.nbytes for a in base.arrays().values()), **shape)  # fmt: skip


def bench_sampling(quick: bool, tmp: Path) -> None:
    """Transitions/s for batches of 256 from the cache vs numpy and d3rlpy."""
    n_eps, T, batch = (100, 200, 256) if quick else (500, 200, 256)
    n_batches, reps = (300, 5) if quick else (2000, 7)
    c = Corpus.open_or_create(tmp / "sampling.zarr", CorpusConfig(durable=False))
    for s in range(n_eps):
        c.append(synthetic_episode(10_000 + s, length=T))
    cache = TrainingCache.build(c, c.snapshot())
    sampler = TransitionSampler(cache, batch_size=batch, seed=0)
    # the anchor: pre-aligned flat arrays, sampled with one fancy index per array
    obs_of_step = np.arange(cache.num_steps) + cache.episode_of_step()
    flat = {
        **{f"obs/{k}": v[obs_of_step] for k, v in cache.obs.items()},
        **{f"next_obs/{k}": v[obs_of_step + 1] for k, v in cache.obs.items()},
        "action": cache.action,
        "reward": cache.reward,
        "done": cache.terminated,
        "truncated": cache.truncated,
    }
    rng = np.random.default_rng(0)

    def numpy_batch() -> dict:
        i = rng.integers(0, cache.num_steps, size=batch)
        return {k: v[i] for k, v in flat.items()}

    def rate(fn) -> float:
        for _ in range(20):
            fn()
        t = time.perf_counter()
        for _ in range(n_batches):
            fn()
        return batch * n_batches / (time.perf_counter() - t)

    peer = None
    if peers.available():
        obs_cat = np.concatenate([cache.obs[k] for k in sorted(cache.obs)], axis=1)
        npz = tmp / "d3rlpy.npz"
        keep = np.ones(len(obs_cat), bool)
        keep[cache.obs_start + cache.lengths] = False  # d3rlpy stores T observations per episode
        timeouts = cache.truncated.copy()
        ends = cache.act_start + cache.lengths - 1
        timeouts[ends] = ~cache.terminated[ends]
        np.savez(npz, observations=obs_cat[keep], actions=cache.action, rewards=cache.reward,
                 terminals=cache.terminated.astype(np.float32), timeouts=timeouts.astype(np.float32))  # fmt: skip
        peer = []
    ours, anchor = [], []
    for _ in range(reps):
        ours.append(rate(sampler.sample))
        anchor.append(rate(numpy_batch))
        if peer is not None:
            got = peers.run_peer(
                "d3rlpy_sampling.py", npz, batch, max(50, n_batches // 4), timeout=600
            )
            if got is None:
                peer = None
            else:
                peer.append(got["transitions_per_s"])
    med = statistics.median
    shape = {"batch": batch, "transitions": cache.num_steps, "obs_keys": len(cache.obs)}
    emit(
        "sample_transitions_per_s",
        med(ours),
        "numpy-fancy-index",
        med(anchor),
        goal_ratio_min=1 / 1.5,
        **shape,
    )
    if peer:
        emit(
            "sample_transitions_per_s",
            med(ours),
            "d3rlpy-2.8.1-replay-buffer",
            med(peer),
            goal_ratio_min=5.0,
            **shape,
        )
    else:
        print(
            "d3rlpy peer skipped: run `bash scripts/bench_env.sh` to create ./.venv-peers",
            file=sys.stderr,
        )


def bench_cache_build(quick: bool, tmp: Path) -> None:
    """ms per episode to build a training cache (gathered reads, `Corpus.read_many`) vs reading
    the same arrays one episode at a time through Zarr's sync API; alternating, medians."""
    n_eps, T, reps = (100, 100, 3) if quick else (500, 100, 5)
    c = Corpus.open_or_create(tmp / "cache.zarr", CorpusConfig(durable=False))
    for s in range(n_eps):
        c.append(synthetic_episode(20_000 + s, length=T))
    snap = c.snapshot()
    ids = [e.episode_id for e in snap.entries]
    keys = None

    def ours() -> float:
        nonlocal keys
        t = time.perf_counter()
        cache = TrainingCache.build(c, snap)
        keys = [f"obs/{k}" for k in cache.obs] + ["action", "reward", "terminated", "truncated"]
        return (time.perf_counter() - t) / n_eps * 1e3

    def one_by_one() -> float:
        t = time.perf_counter()
        for i in ids:
            c.read_arrays(i, keys)
        return (time.perf_counter() - t) / n_eps * 1e3

    mine, base = [], []
    for _ in range(reps):
        mine.append(ours())
        base.append(one_by_one())
    emit("cache_build_ms_per_episode", statistics.median(mine), "zarr-sync-read-one-by-one",
         statistics.median(base), episodes=n_eps, arrays_per_episode=len(keys or []))  # fmt: skip


def group_scan(c: Corpus) -> int:
    """What the index saves us from: open every episode group and read its metadata."""
    n = 0
    for e in os.scandir(c.layout.episodes):
        if e.is_dir():
            zarr.open_group(c.layout.episode(e.name), mode="r").attrs[EPISODE_ATTR]
            n += 1
    return n


def bench_scaling(quick: bool, tmp: Path) -> None:
    """info / verify / filtered list / snapshot time at two sizes, vs a scan of every group."""
    sizes = (200, 2000) if quick else (1000, 10000)
    c = Corpus.open_or_create(tmp / "scaling.zarr", CorpusConfig(durable=False))
    written = 0
    timings: dict[int, dict[str, float]] = {}
    for n in sizes:
        t, before = time.perf_counter(), written
        while written < n:
            ep = synthetic_episode(50_000 + written, length=3, task=("reach", "push")[written % 2])
            c.append(ep)
            written += 1
        fill = (time.perf_counter() - t) / (written - before)
        ops = {
            "info": lambda: Corpus(c.path).info(),
            "verify": lambda: verify(Corpus(c.path)),
            "list_filtered": lambda: c.entries(Filter(task="push", success=False)),
            "snapshot": lambda: c.snapshot(Filter(task="reach")),
            "group_scan": lambda: group_scan(c),
        }
        timings[n] = {}
        for name, fn in ops.items():
            xs = []
            for _ in range(1 if name == "group_scan" else 3):
                t = time.perf_counter()
                fn()
                xs.append(time.perf_counter() - t)
            timings[n][name] = statistics.median(xs)
        emit("append_tiny_episode_s", fill, "none", None, episodes=n)
    small, big = sizes
    for name in ("info", "verify", "list_filtered", "snapshot"):
        for n in sizes:
            emit(f"{name}_s", timings[n][name], "group-scan", timings[n]["group_scan"], episodes=n)
        emit(f"{name}_growth_{big}_vs_{small}", timings[big][name] / timings[small][name], "group-scan-growth",
             timings[big]["group_scan"] / timings[small]["group_scan"])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="about a minute")
    ap.add_argument("--only", default="commit,sampling,cache,scaling")
    args = ap.parse_args()
    print(json.dumps({
        "bench": "corpus", "metric": "versions", "python": platform.python_version(),
        "numpy": np.__version__, "zarr": zarr.__version__, "numcodecs": numcodecs.__version__,
        "opencv": cv2.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
        "quick": args.quick,
    }), flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as d:
        tmp = Path(d)
        only = set(args.only.split(","))
        if "commit" in only:
            bench_commit_and_throughput(args.quick, tmp)
        if "sampling" in only:
            bench_sampling(args.quick, tmp)
        if "cache" in only:
            bench_cache_build(args.quick, tmp)
        if "scaling" in only:
            bench_scaling(args.quick, tmp)
    reporting.print_table(
        "corpus", ("metric", "ours", "anchor", "anchor_value", "ratio", "episodes")
    )


if __name__ == "__main__":
    main()
