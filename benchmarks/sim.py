"""Simulator benchmark: physics and env step rates, rendering, expert quality, collection.

    python -m benchmarks.sim [--quick] [--only steps,camera,render,experts,collect]

Every speed figure is measured beside its anchor, Gymnasium's MuJoCo `Pusher-v5` (a 7-DoF arm
pushing an object, the closest stock env), in the same run, alternating, median of repeats,
single thread, and printed as one JSON line on stdout (`ours`, `anchor`, `anchor_value`,
`ratio` = ours / anchor). Expert success has no anchor. Human tables go to stderr.
`--quick` takes about a minute; the full run about five.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np

import sim
from sim.env import FlywheelEnv
from sim.experts import DEFAULT_NOISE, make_expert

ROWS: list[dict] = []
ANCHOR = "gymnasium-Pusher-v5"
ANCHOR_ID = "Pusher-v5"


def emit(metric: str, ours: float, anchor: str | None, anchor_value: float | None, **extra):
    row = {"bench": "sim", "metric": metric, **extra, "ours": round(float(ours), 4)}
    row["anchor"] = anchor
    if anchor_value is not None:
        row["anchor_value"] = round(float(anchor_value), 4)
        row["ratio"] = round(ours / anchor_value, 4) if anchor_value else None
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def one_core() -> None:
    """Pin to one CPU: rates are stated per core."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def alternate(ours: Callable[[], float], anchor: Callable[[], float], repeats: int):
    """Run the two measurements alternately `repeats` times; medians (ours, anchor)."""
    a, b = [], []
    for _ in range(repeats):
        a.append(ours())
        b.append(anchor())
    return statistics.median(a), statistics.median(b)


def rate(env, steps: int, render: Callable[[], object] | None = None) -> float:
    """Env steps per second under uniform random actions, resetting on episode end."""
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=0)
    t = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if render is not None:
            render()
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - t)


def physics_rate(model: mujoco.MjModel, data: mujoco.MjData, steps: int) -> float:
    """Raw mj_step calls per second (one Python call per physics step)."""
    t = time.perf_counter()
    for _ in range(steps):
        mujoco.mj_step(model, data)
    return steps / (time.perf_counter() - t)


def bench_steps(quick: bool) -> None:
    """Low-dim env steps/s and physics steps/s per task, against Pusher-v5."""
    steps, reps = (1500, 3) if quick else (5000, 5)
    pusher = gym.make(ANCHOR_ID).unwrapped
    for task in sim.TASKS:
        env = FlywheelEnv(task)
        ours, anchor = alternate(
            lambda env=env: rate(env, steps), lambda: rate(pusher, steps), reps
        )
        emit("env_steps_per_s", ours, ANCHOR, anchor, task=task, cameras=0)
        env.reset(seed=0)
        for _ in range(10):  # objects settled, arm moving: a representative contact state
            env.step(np.array([0.2, 0.1, -0.5, 0.0]))
        ours, anchor = alternate(
            lambda env=env: physics_rate(env.model, env.data, steps * 5),
            lambda: physics_rate(pusher.model, pusher.data, steps * 5),
            reps,
        )
        emit("physics_steps_per_s", ours, ANCHOR, anchor, task=task)
        emit("substeps_per_env_step", env.controller.substeps, None, None, task=task)


def bench_camera(quick: bool) -> None:
    """Env steps/s with one 84x84 camera in the observation."""
    steps, reps = (300, 3) if quick else (1000, 5)
    anchor_steps = 20 if quick else 60  # Pusher renders ~10 fps here (shadows, 4x MSAA)
    pusher = gym.make(ANCHOR_ID, render_mode="rgb_array", width=84, height=84).unwrapped
    for task in sim.TASKS:
        env = FlywheelEnv(task, cameras=("front",), image_size=84)
        ours, anchor = alternate(
            lambda env=env: rate(env, steps),
            lambda: rate(pusher, anchor_steps, pusher.render),
            reps,
        )
        emit("env_steps_per_s", ours, f"{ANCHOR}+render84", anchor, task=task, cameras=1, size=84)
        env.close()
    pusher.close()


def bench_render(quick: bool) -> None:
    """Frames per second of one camera at 84 and 128 pixels (lift scene)."""
    frames, reps = (300, 3) if quick else (1000, 5)
    anchor_frames = 20 if quick else 60
    for size in (84, 128):
        env = FlywheelEnv("lift")
        env.reset(seed=0)
        pusher = gym.make(ANCHOR_ID, render_mode="rgb_array", width=size, height=size).unwrapped
        pusher.reset(seed=0)

        def ours_fps(env=env, size=size) -> float:
            t = time.perf_counter()
            for _ in range(frames):
                env.render_camera("front", size)
            return frames / (time.perf_counter() - t)

        def anchor_fps(pusher=pusher) -> float:
            t = time.perf_counter()
            for _ in range(anchor_frames):
                pusher.render()
            return anchor_frames / (time.perf_counter() - t)

        ours, anchor = alternate(ours_fps, anchor_fps, reps)
        emit("render_fps", ours, f"{ANCHOR}-render", anchor, size=size, camera="front")
        env.close()
        pusher.close()


def bench_experts(quick: bool) -> None:
    """Scripted expert success rate per task at noise 0 and at the default noise."""
    seeds = 20 if quick else 100
    for task in sim.TASKS:
        env = FlywheelEnv(task)
        for noise in (0.0, DEFAULT_NOISE):
            wins, steps, attempts = 0, 0, 0
            for seed in range(10_000, 10_000 + seeds):
                obs, _ = env.reset(seed=seed)
                expert = make_expert(task, noise, seed=seed)
                while True:
                    obs, _, terminated, truncated, info = env.step(expert.act(obs))
                    steps += 1
                    if terminated or truncated:
                        break
                wins += info["success"]
                attempts += expert.attempts
            emit(
                "expert_success_rate",
                wins / seeds,
                None,
                None,
                task=task,
                noise=noise,
                episodes=seeds,
                mean_steps=round(steps / seeds, 1),
                mean_regrasps=round(attempts / seeds, 2),
            )


def bench_collect(quick: bool) -> None:
    """Collection into a fresh corpus with 1 and 2 worker processes (lift, expert, no camera)."""
    try:
        from sim.collect import collect
    except ImportError as e:  # pragma: no cover
        print(f"collect skipped: {e}", file=sys.stderr)
        return
    episodes, reps = (12, 1) if quick else (60, 3)
    for cameras in ((), ("front",)):
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(reps):  # alternate 1 and 2 workers; median by throughput
            for workers in (1, 2):
                with tempfile.TemporaryDirectory(prefix="fw-sim-bench-") as d:
                    runs[workers].append(
                        collect(
                            "lift",
                            episodes,
                            noise=DEFAULT_NOISE,
                            seed=0,
                            cameras=cameras,
                            workers=workers,
                            corpus_path=Path(d) / "c.zarr",
                        )
                    )
        for workers, results in runs.items():
            r = sorted(results, key=lambda x: x["env_steps_per_s"])[len(results) // 2]
            emit(
                "collect_env_steps_per_s",
                r["env_steps_per_s"],
                None,
                None,
                task="lift",
                workers=workers,
                cameras=len(cameras),
                episodes=episodes,
                episodes_per_s=round(r["episodes"] / r["seconds"], 2),
                seconds=round(r["seconds"], 2),
            )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="about a minute")
    ap.add_argument("--only", default="steps,camera,render,experts,collect")
    args = ap.parse_args()
    print(
        json.dumps(
            {
                "bench": "sim",
                "metric": "versions",
                "python": platform.python_version(),
                "mujoco": mujoco.__version__,
                "gymnasium": gym.__version__,
                "numpy": np.__version__,
                "gl": os.environ.get("MUJOCO_GL"),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "quick": args.quick,
            }
        ),
        flush=True,
    )
    only = set(args.only.split(","))
    if "collect" in only:  # first, before pinning to one core: it uses 2 processes
        bench_collect(args.quick)
    one_core()
    for name, fn in (
        ("steps", bench_steps),
        ("camera", bench_camera),
        ("render", bench_render),
        ("experts", bench_experts),
    ):
        if name in only:
            fn(args.quick)
    from rich.console import Console
    from rich.table import Table

    cols = ("metric", "task", "ours", "anchor", "anchor_value", "ratio", "detail")
    t = Table(title="sim benchmark (ratio = ours / anchor)")
    for col in cols:
        t.add_column(col)
    shown = {"bench", "metric", "task", "ours", "anchor", "anchor_value", "ratio"}
    for r in ROWS:
        detail = " ".join(f"{k}={v}" for k, v in r.items() if k not in shown)
        t.add_row(*(str(r.get(c, "")) for c in cols[:-1]), detail)
    Console(stderr=True).print(t)


if __name__ == "__main__":
    main()
