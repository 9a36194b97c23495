"""Preparing a version in a helper process, so that loading it costs a running control loop nothing.

Loading a version means verifying its bundle (every file's hash), building its PyTorch actor,
exporting it if need be and checking the export's parity against that actor: tens of
milliseconds of Python and PyTorch. On a thread of the serving process that work holds the GIL
in slices of up to several milliseconds, and a 500 Hz control thread waiting for the GIL misses
its 2 ms deadline. A `Preparer` does all of it in a helper process and gets back a `Prepared`
record: the bundle's card (identity, schema, verified manifest) and the sha256 of the export
file that passed the parity check there. The serving process then only

  1. re-hashes the bundle's files against that manifest (a byte changed since is refused),
  2. reads the export and checks that it is the very file that passed parity (its sha256),
  3. opens it (onnxruntime builds a session mostly outside the GIL) and warms it up (3 calls);

file reads, hashing and onnxruntime release the GIL, so the control thread barely notices.

The helper is started with 'spawn' (never fork: the serving process has threads), niced so it
yields the CPU to the control loop, talks over one pipe (no executor threads here competing for
the GIL), and exits when its parent does. The eager backend has no
export to check and its runner is the PyTorch actor itself, so `Preparer.load` builds it in
process, as `load_policy` does.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.deploy.deployed import (
    BundleCard,
    DeployedPolicy,
    export_for,
    first_observation,
    load_policy,
    parity_observations,
    resolve_bundle,
)
from flywheel.deploy.export import ExportFormat, runner_from_bytes
from flywheel.deploy.observations import Batch
from flywheel.deploy.runners import Backend, one_thread
from flywheel.home import flywheel_home

if TYPE_CHECKING:  # the registry imports deploy (gates); deploy needs it only to type
    from flywheel.registry.store import Registry


class PrepareError(Exception):
    """The helper process died (killed, out of memory) or hung while preparing a version."""


@dataclass(frozen=True)
class Request:
    """What the helper needs to find a version; paths absolute (the helper keeps its own cwd)."""

    ref: str | int | Path
    registry_root: Path | None
    backend: ExportFormat
    observations: Batch | None
    home: Path
    """$FLYWHEEL_HOME of the serving process (exports of bundle folders live under it)."""


@dataclass(frozen=True)
class Prepared:
    """A version verified and parity-checked in the helper: what the serving process opens."""

    version: int | None
    card: BundleCard
    backend: ExportFormat
    export_file: Path
    export_sha256: str
    """sha256 of the export bytes that passed the parity check in the helper."""
    parity: dict[str, Any]
    warm_obs: dict[str, np.ndarray]
    """One observation to warm the runner up with."""
    helper_pid: int


def prepare(req: Request) -> Prepared:
    """Helper side: verify the bundle, export it if need be, check the export's parity."""
    from flywheel.registry.store import Registry  # the registry imports deploy

    registry = Registry(req.registry_root) if req.registry_root is not None else None
    version, bundle, export_root, obs = resolve_bundle(
        req.ref, registry, req.observations, req.home
    )
    _, doc = export_for(bundle, req.backend, export_root, obs)
    card = BundleCard.of(bundle)
    return Prepared(
        version=version,
        card=card,
        backend=req.backend,
        export_file=(export_root / req.backend / doc["file"]).resolve(),
        export_sha256=doc["sha256"],
        parity=doc["parity_on_load"],
        warm_obs=first_observation(parity_observations(bundle, obs), card.keys),
        helper_pid=os.getpid(),
    )


WARMUP = 3
"""Warm-up calls after opening: a fresh onnxruntime session's first call takes about 4x a steady
one, its second 1.5x, then steady. Each call takes the GIL again on a thread that, on a busy
core, can be descheduled while holding it, so no more than that (load_policy does 20)."""


def open_prepared(p: Prepared, warmup: int = WARMUP) -> DeployedPolicy:
    """Serving side: re-check the bundle and the export's hash, open the export, warm it up.

    Raises BundleError if a bundle file changed since the helper verified it, and ExportError
    if the export file is not the one that passed parity.
    """
    p.card.check_unchanged()
    runner = runner_from_bytes(p.backend, p.export_file.read_bytes(), p.card.keys, p.export_sha256)
    for _ in range(warmup):
        runner(p.warm_obs)
    return DeployedPolicy(
        bundle=None, card=p.card, runner=runner, version=p.version, backend=p.backend
    )


class Preparer:
    """A helper process that prepares versions for `load`, one at a time; started on first use
    (or by `start`) and kept for the next one until `close`.

    One process and one pipe, used by the thread that calls `load`: no executor threads in the
    serving process, whose Python work would compete with the control thread for the GIL.
    """

    def __init__(
        self,
        *,
        nice: int = 10,
        cpus: Iterable[int] | None = None,
        timeout_s: float = 600.0,
        open_priority: int | None = None,
    ) -> None:
        """`nice`: added to the helper's niceness, so it yields the CPU to the control loop.
        `cpus`: the cores the helper may run on (default: those of the thread starting it).
        `timeout_s`: a preparation taking longer is abandoned and the helper killed.
        `open_priority`: for a real-time (SCHED_FIFO) control thread: the FIFO priority, below
        that thread's, at which the calling thread opens the export (then restored), so that no
        ordinary process can deschedule it while it holds the GIL the control thread waits for.
        Ignored where not permitted; None: open at the calling thread's own priority."""
        self.nice = nice
        self.cpus = tuple(cpus) if cpus is not None else None
        self.timeout_s = timeout_s
        self.open_priority = open_priority
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def _helper(self) -> Connection:
        """The pipe to a running helper, starting one if there is none (holding the lock)."""
        if self._conn is None or self._proc is None or not self._proc.is_alive():
            self._discard()
            ctx = multiprocessing.get_context("spawn")  # never fork a process with threads
            here, there = ctx.Pipe()
            proc = ctx.Process(
                target=_serve,
                args=(there, os.getpid(), self.nice, self.cpus),
                name="flywheel-prepare",
                daemon=True,
            )
            proc.start()
            there.close()
            self._proc, self._conn = proc, here
        return self._conn

    def _call(self, kind: str, arg: Any = None) -> Any:
        with self._lock:
            conn = self._helper()
            try:
                conn.send((kind, arg))
                if not conn.poll(self.timeout_s):
                    self._discard()
                    raise PrepareError(f"the helper took over {self.timeout_s:g} s; stopped it")
                status, value = conn.recv()
            except (EOFError, OSError) as e:  # it died: the next call starts a fresh one
                self._discard()
                raise PrepareError(f"the helper process died ({type(e).__name__})") from None
        if status == "error":
            raise value
        return value

    def start(self) -> Preparer:
        """Start the helper now, without waiting: its imports take seconds, a swap should not."""
        with self._lock:
            self._helper()
        return self

    def helper_pid(self) -> int:
        """The helper's process id, once it answers."""
        return self._call("pid")

    def load(
        self,
        ref: str | int | Path,
        *,
        registry: Registry | None = None,
        backend: Backend = "onnx",
        observations: Batch | None = None,
        warmup: int = WARMUP,
    ) -> DeployedPolicy:
        """`load_policy`, with everything but opening the checked export done in the helper."""
        if backend == "eager":
            return load_policy(
                ref, registry=registry, backend=backend, observations=observations, warmup=warmup
            )
        prepared = self.prepare(ref, registry=registry, backend=backend, observations=observations)
        with fifo_priority(self.open_priority):
            return open_prepared(prepared, warmup)

    def prepare(
        self,
        ref: str | int | Path,
        *,
        registry: Registry | None = None,
        backend: ExportFormat = "onnx",
        observations: Batch | None = None,
    ) -> Prepared:
        """The helper's half of `load`: verified and parity-checked there, for `open_prepared`."""
        req = Request(
            ref=Path(ref).resolve() if isinstance(ref, Path) else ref,
            registry_root=registry.root.resolve() if registry is not None else None,
            backend=backend,
            observations=observations,
            home=flywheel_home().resolve(),
        )
        try:
            return self._call("prepare", req)
        except PrepareError as e:
            raise PrepareError(f"preparing {ref!r}: {e}") from None

    def _discard(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(5)

    def close(self) -> None:
        """Stop the helper (after a preparation under way): it exits when its pipe closes."""
        with self._lock:
            proc, conn = self._proc, self._conn
            self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    def __enter__(self) -> Preparer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def fifo_priority(priority: int | None) -> Iterator[bool]:
    """Run the calling thread at SCHED_FIFO `priority` inside the block, then as before; yields
    whether it does (False: None given, or not permitted)."""
    if priority is None:
        yield False
        return
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError):  # not Linux, or no CAP_SYS_NICE / rtprio limit
        yield False
        return
    try:
        yield True
    finally:
        os.sched_setscheduler(0, policy, param)


def _serve(conn: Connection, parent: int, nice: int, cpus: tuple[int, ...] | None) -> None:
    """The helper: answer requests until the pipe closes (or the parent is gone)."""
    with contextlib.suppress(AttributeError, OSError):  # a real-time control thread started us
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    if cpus:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(0, cpus)
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    one_thread()
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    while True:
        try:
            kind, arg = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = ("ok", prepare(arg) if kind == "prepare" else os.getpid())
        except Exception as e:  # refused (tampered, not at parity, no such version): say why
            reply = ("error", e)
        try:
            conn.send(reply)
        except Exception as e:  # e.g. an exception that does not pickle
            conn.send(("error", PrepareError(f"{type(e).__name__}: {e}")))


def _exit_with(parent: int) -> None:
    """A killed server cannot tell its helper to stop; the helper notices it was orphaned."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)
