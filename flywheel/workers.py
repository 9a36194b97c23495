"""An `EnvPool` whose envs step in worker processes, so physics runs on every core.

Online RL on a small machine is bound by env stepping (a MuJoCo arm task is ~0.5 ms a step),
and Python steps one env at a time. `ProcessEnvPool` splits the envs over W processes, each
running a plain in-process `EnvPool` on its share. One `step` sends each worker its actions and
gathers the results (SAC and evaluation act between every two steps); one `segment` sends each
worker a snapshot of the policy and gets back its share's whole PPO rollout, so acting is split
over the cores too and a rollout costs two messages per worker instead of two per step. The
policy stays exactly on-policy (every action comes from the current weights); only wall time
changes.

Env factories travel to the workers with cloudpickle (lambdas and closures work). A worker is a
fresh interpreter (`python -m flywheel.workers FD`, talking over a socket pair): nothing is
inherited (threads, GL contexts) and, unlike multiprocessing's spawn, the caller's `__main__`
is not re-imported, so scripts need no `if __name__ == "__main__"` guard. Each worker's envs draw reset
seeds from their own range (`seed + w * SEED_STRIDE`), so a run is reproducible for a given
seed and worker count. A worker imports what its envs and NumPy snapshots need, not torch or
zarr (about 2 s of start-up here), and the pool does not wait for it to start until first used.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import cloudpickle
import gymnasium as gym
import numpy as np

from flywheel.rollout import EnvPool, EpisodeRecord, Segment, StepResult, check_noise

if TYPE_CHECKING:
    from flywheel.policies.numpy_forward import Behaviour

SEED_STRIDE = 1_000_000
"""Reset seeds of worker w start at seed + w * SEED_STRIDE."""


def _serve(conn: Connection) -> None:
    """Worker loop: build the pool, say "ready", then answer ("step", args) / ("segment", args)
    until ("close", None)."""
    try:
        env_fns, kwargs = cloudpickle.loads(conn.recv_bytes())
        pool = EnvPool(env_fns, **kwargs)
        conn.send(("ready", pool.batch()))
        while True:
            cmd, arg = conn.recv()
            if cmd in ("step", "segment"):
                conn.send(("ok", getattr(pool, cmd)(*arg)))
            else:
                pool.close()
                return
    except EOFError:  # the learner is gone
        return
    except Exception as e:  # report, do not hang the learner
        conn.send(("error", f"{type(e).__name__}: {e}"))


class ProcessEnvPool:
    """Same interface as `EnvPool` (`n`, `batch`, `step`, `close`), envs in worker processes.

    With `local_share` the calling process steps one share itself while the workers step the
    others, so W workers keep W + 1 cores busy: on a 2-core machine one worker and the learner
    split the envs, and nothing waits on an oversubscribed core.
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        *,
        workers: int,
        local_share: bool = False,
        seed: int = 0,
        record: bool = True,
        reset_options: Callable[[int], dict | None] | None = None,
    ) -> None:
        self.n, self.record = len(env_fns), record
        shares = max(1, min(workers + int(local_share), self.n))
        self._slices = [s for s in np.array_split(np.arange(self.n), shares) if len(s)]
        self._conns: list[Connection] = []
        self._procs: list[subprocess.Popen] = []
        self._local: EnvPool | None = None
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for w, idx in enumerate(self._slices):
            kwargs = {"seed": seed + w * SEED_STRIDE, "record": record, "reset_options": reset_options}  # fmt: skip
            if local_share and w == 0:
                continue  # built below, once the workers are starting
            ours, theirs = socket.socketpair()
            fd = theirs.fileno()
            cmd = [sys.executable, "-m", "flywheel.workers", str(fd)]
            self._procs.append(subprocess.Popen(cmd, pass_fds=(fd,), env=env))
            theirs.close()
            conn = Connection(ours.detach())
            conn.send_bytes(cloudpickle.dumps(([env_fns[i] for i in idx], kwargs)))
            self._conns.append(conn)
        if local_share:
            self._local = EnvPool([env_fns[i] for i in self._slices[0]], seed=seed, record=record, reset_options=reset_options)  # fmt: skip
        self._obs: list[dict[str, np.ndarray]] | None = None  # see `_started`
        self._closed = False

    def _started(self) -> list[dict[str, np.ndarray]]:
        """Every share's current observations. The first call waits for the workers' "ready"
        (a worker takes about 0.6 s to start), so building the pool returns once the workers
        are spawned and whatever the caller does next overlaps their start-up."""
        if self._closed:
            raise RuntimeError("the env pool is closed")
        if self._obs is None:
            self._obs = ([self._local.batch()] if self._local else []) + [self._recv(c) for c in self._conns]  # fmt: skip
        return self._obs

    def _died(self) -> RuntimeError:
        self.close()
        return RuntimeError("an env worker process died")

    def _recv(self, conn: Connection) -> Any:
        try:
            status, value = conn.recv()
        except (EOFError, OSError):  # closed, or reset by a killed worker
            raise self._died() from None
        if status == "error":
            self.close()
            raise RuntimeError(f"env worker failed: {value}")
        return value

    def batch(self) -> dict[str, np.ndarray]:
        """Current observations as {key: (N, ...)}."""
        obs = self._started()
        return {k: np.concatenate([o[k] for o in obs]) for k in obs[0]}

    def _on_shares(self, method: str, args: Callable[[np.ndarray], tuple]) -> list[Any]:
        """`EnvPool.<method>(*args(share's env indices))` on every share at once, results in
        share order: the workers get theirs first, then the local share runs while they do."""
        self._started()  # a worker's "ready" comes before any reply
        remote = self._slices[1:] if self._local else self._slices
        for conn, idx in zip(self._conns, remote, strict=True):
            try:
                conn.send((method, args(idx)))
            except OSError:  # a killed worker resets the connection
                raise self._died() from None
        try:
            local = [getattr(self._local, method)(*args(self._slices[0]))] if self._local else []
        except BaseException:  # the workers' replies would be left unread: end the pool
            self.close()
            raise
        return local + [self._recv(c) for c in self._conns]

    def step(self, actions: np.ndarray) -> StepResult:
        parts = self._on_shares("step", lambda idx: (actions[idx],))
        self._obs = [p[0] for p in parts]
        final: dict[int, dict[str, np.ndarray]] = {}
        finished: list[EpisodeRecord] = []
        for p, idx in zip(parts, self._slices, strict=True):
            final |= {int(idx[i]): o for i, o in p[4].items()}
            finished += p[5]
        return (
            self.batch(),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
            np.concatenate([p[3] for p in parts]),
            final,
            finished,
        )

    def segment(self, behaviour: Behaviour, noise: np.ndarray) -> Segment:
        """`EnvPool.segment` over every share at once: each worker acts with its own copy of
        `behaviour` for the whole rollout, so a rollout costs one message each way per worker
        instead of one per step, and acting is split over the cores with the physics."""
        check_noise(noise, self.n, behaviour)  # before any share starts
        parts = self._on_shares("segment", lambda idx: (behaviour, noise[:, idx]))
        self._obs = [p.last_obs for p in parts]
        return Segment.concat(parts)

    def close(self) -> None:
        """Stop the workers (at most ~5 s in all); safe to call twice."""
        self._closed = True
        for conn in self._conns:
            with contextlib.suppress(OSError):  # a worker that already exited
                conn.send(("close", None))
        deadline = time.monotonic() + 5
        for conn, proc in zip(self._conns, self._procs, strict=True):
            # read what the worker may still be sending (a "ready" never read, when the pool
            # is closed before its first use): a large one would block it before "close"
            with contextlib.suppress(EOFError, OSError):
                while conn.poll(max(0.0, deadline - time.monotonic())):
                    conn.recv_bytes()
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in self._conns:
            conn.close()
        if self._local is not None:
            self._local.close()
        self._conns, self._procs, self._local = [], [], None


def make_pool(
    env_fns: list[Callable[[], gym.Env]], *, workers: int = 0, **kwargs: Any
) -> EnvPool | ProcessEnvPool:
    """In-process pool for `workers` 0, else envs split over this process and `workers` more."""
    if workers <= 0:
        return EnvPool(env_fns, **kwargs)
    return ProcessEnvPool(env_fns, workers=workers, local_share=True, **kwargs)


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
