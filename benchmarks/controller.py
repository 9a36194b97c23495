"""Controller benchmark: action latency per backend, server round trip, a 500 Hz loop with a swap.

    python -m benchmarks.controller [--quick] [--only latency,server,loop]

Policy: the deployed MLP shape (GaussianActor, [256, 256], 21-d observation in 5 keys as in
the sim tasks, 4-d action), one thread, observations replayed from a fixed set.
- latency: one observation -> one action, in process, alternating backends in rounds:
  PyTorch eager (anchor) vs TorchScript vs ONNX Runtime, plus the whole controller tick
  (validation, policy, clipping) on the fastest. Floor: p99 < 1 ms for the best backend.
- server: WebSocket round trip on loopback (server in its own process, pinned to the other core)
  paced at 100 Hz and 500 Hz; anchor: the in-process controller tick. Floor: p99 < 3 ms at 500 Hz.
- loop: a 500 Hz control loop (60 s; --quick 12 s) on one core that loads and stages a new
  version from the registry half-way, from a thread on the other core (the swap happens at a
  tick boundary, the harder case). The version is prepared (bundle verified, export
  parity-checked) in a helper process on the other core, as the server does, and only opened
  in the loop's process (--prepare thread: all of it on the loader thread, the old way).
  Missed deadlines in the swap window (load start .. adoption + 1 s) vs the number expected
  there from the loop's miss rate elsewhere, and the worst tick during the load vs elsewhere.
  Floor: none caused by the swap. Python's GIL switch interval is 0.5 ms (as the server sets
  it; FW_SWITCH_INTERVAL overrides). --swaps N: N loads evenly spaced, for a tighter estimate
  (misses while loading vs the background rate, worst tick while loading); --realtime: the
  control thread at SCHED_FIFO 50 and the opening of a prepared version at 10, as on a robot
  (Preparer(open_priority=...)); --busy-other-core: a process spinning on the
  other core, where loading happens (the case that made the old in-thread loading miss).
JSON lines on stdout, a table on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from benchmarks import reporting
from flywheel.deploy.controller import Controller, ControllerConfig, PolicySlot
from flywheel.deploy.deployed import load_policy
from flywheel.deploy.observations import synthetic
from flywheel.deploy.prepare import Preparer, fifo_priority, open_prepared
from flywheel.policies import GaussianActor, Normalizer, PolicySpec, save_bundle
from flywheel.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
OBS = {
    "ee_pos": (3,),
    "goal_pos": (3,),
    "gripper_width": (1,),
    "joint_pos": (7,),
    "joint_vel": (7,),
}
HZ = 20.0
SWITCH_INTERVAL = float(os.environ.get("FW_SWITCH_INTERVAL", "0.0005"))


def emit(metric: str, ours: float, anchor: str | None, anchor_value: float | None, **extra) -> None:
    reporting.emit("controller", metric, ours, anchor, anchor_value, digits=4, **extra)


LOOP_CORE, OTHER_CORE = -1, 0
"""The loop and in-process timings run on the last core, the server process and the version
loader on the first: other benchmarks here pin themselves to the first core."""
try:
    CORES = sorted(os.sched_getaffinity(0))
    """The cores this process may use, read before any thread pins itself (a thread inherits
    its creator's pinning, so asking later would see one core)."""
except AttributeError:
    CORES = list(range(os.cpu_count() or 1))


def core(index: int) -> int:
    return CORES[index % len(CORES)]


def pin(index: int) -> None:
    """Pin the calling thread (and threads and processes it starts later) to one core
    (index into CORES, -1: last)."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {core(index)})


def make_registry(tmp: Path) -> Registry:
    """Two versions of the MLP policy (same schema, different weights) in a fresh registry."""
    reg = Registry(tmp / "registry")
    for seed in (0, 1):
        torch.manual_seed(seed)
        spec = PolicySpec(obs_shapes=OBS, action_dim=4, hidden=(256, 256))
        norm = Normalizer(spec.obs_shapes)
        for k in OBS:
            getattr(norm, f"std_{k}").fill_(0.5)
        path = save_bundle(
            tmp / f"b{seed}",
            GaussianActor(spec, norm),
            task="reach",
            control_hz=HZ,
            lineage={"algorithm": "bench"},
        )
        reg.register(path)
    reg.move({"production": 1}, op="bench", why="benchmark setup")
    return reg


def frames(policy, n: int = 256) -> list[dict[str, np.ndarray]]:
    doc = json.loads((policy.card.path / "normalizer.json").read_text())
    batch = synthetic(policy.schema, doc, n, seed=1)
    return [{k: batch[k][i] for k in OBS} for i in range(n)]


def percentiles(xs: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(xs, [50, 99])
    return float(p50), float(p99)


# ---------------------------------------------------------------------- in-process latency


def bench_latency(reg: Registry, quick: bool) -> float:
    """Per-backend single-observation latency; returns the in-process tick p99 (ms)."""
    pin(LOOP_CORE)
    policies = {
        b: load_policy(1, registry=reg, backend=b) for b in ("eager", "torchscript", "onnx")
    }
    obs = frames(policies["eager"])
    rounds, per_round = (5, 400) if quick else (10, 2000)
    times: dict[str, list[float]] = {b: [] for b in [*policies, "tick"]}
    for p in policies.values():  # warm-up
        for o in obs[:100]:
            p.runner(o)
    for r in range(rounds):
        order = list(policies) if r % 2 == 0 else list(reversed(policies))
        for b in order:
            run = policies[b].runner
            ts = times[b]
            for i in range(per_round):
                o = obs[i % len(obs)]
                t0 = time.perf_counter_ns()
                run(o)
                ts.append((time.perf_counter_ns() - t0) / 1e6)
    stats = {b: percentiles(ts) for b, ts in times.items() if ts}
    best = min(stats, key=lambda b: stats[b][1])
    ctl = Controller(policies[best], ControllerConfig(deadline_periods=1e6))
    for i in range(rounds * per_round):
        o = obs[i % len(obs)]
        t0 = time.perf_counter_ns()
        ctl.act(o)
        times["tick"].append((time.perf_counter_ns() - t0) / 1e6)
    stats["tick"] = percentiles(times["tick"])
    e50, e99 = stats["eager"]
    for b in ("torchscript", "onnx"):
        emit(f"action_latency_p50_ms_{b}", stats[b][0], "torch-eager", e50)
        emit(
            f"action_latency_p99_ms_{b}",
            stats[b][1],
            "torch-eager",
            e99,
            floor="p99 < 1 ms for the best backend",
            met=stats[best][1] < 1.0 if b == best else None,
        )
    emit("controller_tick_p50_ms", stats["tick"][0], f"{best} runner alone", stats[best][0])
    emit(
        "controller_tick_p99_ms",
        stats["tick"][1],
        f"{best} runner alone",
        stats[best][1],
        includes="observation validation, policy, limits, rate limit, watchdog",
    )
    return stats["tick"][1]


# ---------------------------------------------------------------------- server round trip


def bench_server(reg: Registry, quick: bool, tick_p50: float, tick_p99: float) -> None:
    from flywheel.deploy.client import ClientConfig, RobotClient, ServerError

    port = _free_port()
    server = subprocess.Popen(  # pins itself to the other core
        [sys.executable, "-m", "benchmarks.controller", "--serve", str(reg.root), str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pin(LOOP_CORE)
    try:
        client = RobotClient(ClientConfig(url=f"ws://127.0.0.1:{port}/", reply_timeout_periods=1e6))
        deadline = time.monotonic() + 60
        while True:
            try:
                client.connect()
                break
            except ServerError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server did not start: {server.stderr.read()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        client.reset()
        p = load_policy(1, registry=reg, backend="onnx")
        obs = frames(p)
        seconds = 5 if quick else 20
        for hz in (100, 500):
            rtts = paced(lambda i: client.act(obs[i % len(obs)]).rtt_ms, hz, seconds)
            p50, p99 = percentiles(rtts)
            emit(
                f"server_round_trip_p50_ms_{hz}hz",
                p50,
                "in-process controller tick",
                tick_p50,
                n=len(rtts),
            )
            emit(
                f"server_round_trip_p99_ms_{hz}hz",
                p99,
                "in-process controller tick",
                tick_p99,
                n=len(rtts),
                floor="p99 < 3 ms at 500 Hz" if hz == 500 else None,
                met=(p99 < 3.0) if hz == 500 else None,
            )
        client.close()
    finally:
        server.terminate()
        server.wait(10)


def paced(step, hz: float, seconds: float) -> list[float]:
    """Call step(i) at `hz` (sleep, then spin the last 0.2 ms); returns what step returns."""
    period = 1.0 / hz
    n = int(seconds * hz)
    out = []
    t_next = time.perf_counter()
    for i in range(n):
        out.append(step(i))
        t_next += period
        _sleep_until(t_next)
    return out[int(0.05 * n) :]  # drop the first 5% (connection and cache warm-up)


def _sleep_until(t: float) -> None:
    left = t - time.perf_counter()
    if left > 3e-4:
        time.sleep(left - 2e-4)
    while time.perf_counter() < t:
        pass


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(root: str, port: int) -> None:
    """The server process of the round-trip benchmark."""
    from flywheel.deploy.server import ServerConfig, serve_registry

    pin(OTHER_CORE)
    torch.set_num_threads(1)
    cfg = ServerConfig(port=port, alias="production", record_episodes=False)
    serve_registry(Registry(root), cfg).serve_forever()


# ---------------------------------------------------------------------- 500 Hz loop with a swap


LOADER_PRIORITY = 10
"""--realtime: SCHED_FIFO priority of the thread opening a prepared version (the loop's is 50)."""


def realtime(on: bool, priority: int = 50) -> bool:
    """Run the calling thread at a real-time priority (SCHED_FIFO, as a robot's control thread
    would), or back at the normal one; False when not permitted. Threads inherit it."""
    try:
        if on:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        else:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        return False
    return True


def busy_other_core() -> subprocess.Popen:
    """A process spinning on the other core at normal priority: the robot computer's other work
    (perception, logging), and the condition in which a loader thread holding the GIL gets
    descheduled."""
    return subprocess.Popen(
        [sys.executable, "-c", "while True: pass"],
        preexec_fn=lambda: os.sched_setaffinity(0, {core(OTHER_CORE)}),
    )


def bench_loop(
    reg: Registry,
    quick: bool,
    prepare: str = "helper",
    swaps: int = 1,
    rt: bool = False,
    busy: bool = False,
) -> None:
    pin(LOOP_CORE)
    sys.setswitchinterval(SWITCH_INTERVAL)
    hz, seconds = 500.0, (12.0 if quick else 60.0)
    period = 1.0 / hz
    # the export of v2 exists before the alias moves (the promotion's latency gate made it)
    load_policy(2, registry=reg, backend="onnx", warmup=0)
    first = load_policy(1, registry=reg, backend="onnx")
    # the server starts its helper when it starts, not at the first swap (from the other core:
    # it imports there before pinning itself)
    opening = LOADER_PRIORITY if rt else None  # below the loop's, when the loop is real-time
    preparer = (
        Preparer(cpus=[core(OTHER_CORE)], open_priority=opening) if prepare == "helper" else None
    )
    if preparer is not None:
        starter = threading.Thread(target=lambda: (pin(OTHER_CORE), preparer.helper_pid()))
        starter.start()
        starter.join()
    slot = PolicySlot(first)
    ctl = Controller(slot, ControllerConfig(swap_at="tick", control_hz=hz))
    burner = busy_other_core() if busy else None
    rt = rt and realtime(True)
    obs = frames(first)
    n = int(seconds * hz)
    done = np.zeros(n)  # seconds from a tick's start to its action
    ok = np.zeros(n, bool)
    versions = np.zeros(n, np.int8)
    # swap k starts loading at tick triggers[k]: to v2, back to v1, ... (one swap: half-way)
    triggers = {n * (k + 1) // (swaps + 1): k for k in range(swaps)}
    targets = [2 if k % 2 == 0 else 1 for k in range(swaps)]
    marks: list[dict[str, float]] = [{} for _ in range(swaps)]

    def load_and_stage(k: int) -> None:
        pin(OTHER_CORE)  # this thread only: the loader runs beside the loop's core, not on it
        if rt:
            realtime(False)  # the loop's real-time priority is inherited: drop it
        marks[k]["load_start"] = time.perf_counter()
        if preparer is not None:  # verified and parity-checked in the helper, opened here
            prepared = preparer.prepare(targets[k], registry=reg, backend="onnx")
            marks[k]["prepared"] = time.perf_counter()
            with fifo_priority(preparer.open_priority):
                new = open_prepared(prepared)
        else:  # hash checks, PyTorch actor, parity, warm-up: all on this thread
            new = load_policy(targets[k], registry=reg, backend="onnx")
        marks[k]["staged"] = time.perf_counter()
        slot.stage(new, reason="benchmark swap")

    t0 = time.perf_counter()
    for i in range(n):
        start = t0 + i * period
        _sleep_until(start)
        if i in triggers:
            threading.Thread(target=load_and_stage, args=(triggers[i],), daemon=True).start()
        d = ctl.act(obs[i % len(obs)], stamp=time.monotonic())
        done[i] = time.perf_counter() - start
        ok[i] = d.status == "ok"
        versions[i] = ctl.policy.version or 0
    if rt:
        realtime(False)
    if burner is not None:
        burner.kill()
        burner.wait()
    if preparer is not None:
        preparer.close()
    late = (done > period) | ~ok
    assert all("staged" in m for m in marks), "a swap never happened"
    loads, after, windows, opening = (np.zeros(n, bool) for _ in range(4))
    adopted: list[int] = []
    for k, m in enumerate(marks):
        i_load = int((m["load_start"] - t0) / period)
        i_staged = int((m["staged"] - t0) / period)
        a = i_staged + int(np.argmax(versions[i_staged:] == targets[k]))
        assert versions[a] == targets[k], "a staged version was never adopted"
        adopted.append(a)
        loads[i_load : i_staged + 1] = True  # ticks that started while it was being loaded
        if "prepared" in m:  # of which: the helper was done, this process opened the export
            opening[int((m["prepared"] - t0) / period) : i_staged + 1] = True
        after[a : a + 50] = True
        windows[i_load : a + int(hz)] = True  # the window: load start .. adoption + 1 s
    loads_ms = [(m["staged"] - m["load_start"]) * 1e3 for m in marks]
    quiet = ~(loads | after)
    rate = late[quiet].mean()  # the machine's background miss rate
    if swaps == 1:
        emit(
            "missed_deadlines_500hz_swap_window",
            int(late[windows].sum()),
            "expected from the rest of the loop",
            late[~windows].mean() * windows.sum(),
            ticks=int(windows.sum()),
            during_load=int(late[loads].sum()),
            first_50_ticks_after_swap=int(late[after].sum()),
            load_ms=round(loads_ms[0], 1),
            prepare=prepare,
            realtime=rt,
            busy_other_core=busy,
            floor="none caused by the swap",
            met=bool(late[windows].sum() <= np.ceil(late[~windows].mean() * windows.sum())),
        )
    emit(
        "missed_deadlines_500hz_during_loads",
        int(late[loads].sum()),
        "expected from the rest of the loop",
        rate * loads.sum(),
        swaps=swaps,
        ticks=int(loads.sum()),
        first_50_ticks_after_swaps=int(late[after].sum()),
        expected_after_swaps=round(float(rate * after.sum()), 3),
        load_ms_median=round(float(np.median(loads_ms)), 1),
        load_ms_max=round(max(loads_ms), 1),
        opening_ticks=int(opening.sum()),
        missed_while_opening=int(late[opening].sum()),
        expected_while_opening=round(float(rate * opening.sum()), 3),
        prepare=prepare,
        realtime=rt,
        busy_other_core=busy,
    )
    emit(
        "worst_tick_ms_during_loads",
        float(done[loads].max() * 1e3),
        "p99.9 of ticks elsewhere",
        float(np.percentile(done[quiet], 99.9) * 1e3),
        p99_during_loads_ms=round(float(np.percentile(done[loads], 99) * 1e3), 3),
        worst_while_opening_ms=round(float(done[opening].max() * 1e3), 3)
        if opening.any()
        else None,
        max_elsewhere_ms=round(float(done[quiet].max() * 1e3), 3),
        deadline_ms=period * 1e3,
        prepare=prepare,
        realtime=rt,
        busy_other_core=busy,
    )
    emit(
        "missed_deadlines_500hz_total",
        int(late.sum()),
        None,
        None,
        ticks=n,
        seconds=seconds,
        swaps_adopted=len(adopted),
        versions_ok=bool((versions[adopted[-1] :] == targets[-1]).all()),
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="about a minute")
    ap.add_argument("--only", default="latency,server,loop")
    ap.add_argument(
        "--prepare",
        choices=("helper", "thread"),
        default="helper",
        help="loop: prepare the new version in a helper process (as the server does) or on the "
        "loader thread (the old way)",
    )
    ap.add_argument(
        "--realtime",
        action="store_true",
        help="loop: run the control thread at SCHED_FIFO priority, as on a robot (needs the "
        "permission; the JSON says whether it got it)",
    )
    ap.add_argument(
        "--busy-other-core",
        action="store_true",
        help="loop: keep the other core busy with a spinning process (other work on the robot "
        "computer)",
    )
    ap.add_argument(
        "--swaps",
        type=int,
        default=1,
        help="loop: versions loaded and swapped in, evenly spaced (1: half-way, the issue's case; "
        "more: a tighter estimate of what loading costs the loop)",
    )
    ap.add_argument("--serve", nargs=2, metavar=("REGISTRY", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    import onnxruntime
    import websockets

    print(
        json.dumps(
            {
                "bench": "controller",
                "metric": "versions",
                "python": platform.python_version(),
                "torch": torch.__version__,
                "onnxruntime": onnxruntime.__version__,
                "websockets": websockets.__version__,
                "numpy": np.__version__,
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "threads": 1,
                "quick": args.quick,
            }
        ),
        flush=True,
    )
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as d:
        reg = make_registry(Path(d))
        tick = (0.0, 0.0)
        if "latency" in only or "server" in only:
            bench_latency(reg, args.quick)
            rows = {r["metric"]: r for r in reporting.ROWS_BY_BENCH["controller"]}
            tick = (rows["controller_tick_p50_ms"]["ours"], rows["controller_tick_p99_ms"]["ours"])
        if "server" in only:
            bench_server(reg, args.quick, *tick)
        if "loop" in only:
            bench_loop(
                reg, args.quick, args.prepare, args.swaps, args.realtime, args.busy_other_core
            )
    reporting.print_table(
        "controller", ("metric", "ours", "anchor", "anchor_value", "ratio", "met")
    )


if __name__ == "__main__":
    main()
