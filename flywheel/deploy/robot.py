"""A robot that is a Gymnasium env: drive episodes through a controller server, as hardware would.

The loop is the one a real robot runs: observe, send the observation with its age, apply
whatever action comes back (an ok action, a held one, or a stop), and pace itself to the control
rate when `realtime` (a simulator may run as fast as it can; the server cannot tell).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flywheel.deploy.client import RobotClient, RobotSpec


@dataclass
class EpisodeResult:
    """One episode driven through the server."""

    seed: int
    steps: int
    success: bool
    ret: float
    safety_stop: bool
    end: str
    """How it ended: terminated, truncated, or safety_stop."""
    versions: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    rtt_ms_p50: float = 0.0
    rtt_ms_p99: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_episodes(
    client: RobotClient,
    env_fn: Callable[[], Any],
    *,
    episodes: int,
    seed: int = 0,
    realtime: bool = False,
    progress: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    """Connect (if needed), run `episodes` seeded episodes, report each to the server."""
    env = env_fn()
    try:
        if client.ws is None:
            client.connect(RobotSpec.from_env(env))
        out = []
        for i in range(episodes):
            res = _episode(client, env, seed + i, realtime)
            client.end_episode(success=res.success, steps=res.steps)
            out.append(res)
            if progress is not None:
                progress(res)
        return out
    finally:
        env.close()


def _episode(client: RobotClient, env: Any, seed: int, realtime: bool) -> EpisodeResult:
    client.reset()
    obs, _ = env.reset(seed=seed)
    t_obs = time.perf_counter()
    statuses: Counter[str] = Counter()
    versions: list[str] = []
    rtts: list[float] = []
    ret, success, steps, end = 0.0, False, 0, ""
    next_tick = time.perf_counter()
    while True:
        step = client.act(obs, age=time.perf_counter() - t_obs)
        statuses[step.status] += 1
        if step.version and (not versions or versions[-1] != step.version):
            versions.append(step.version)
        if step.rtt_ms:
            rtts.append(step.rtt_ms)
        obs, reward, terminated, truncated, info = env.step(step.action)
        t_obs = time.perf_counter()
        ret += float(reward)
        steps += 1
        success = success or bool(info.get("success", info.get("is_success", False)))
        if step.status == "stopped":
            end = "safety_stop"  # a real robot halts here and waits for an operator
            break
        if terminated or truncated:
            end = "terminated" if terminated else "truncated"
            break
        if realtime:
            next_tick += client.period
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    p50, p99 = np.percentile(rtts, [50, 99]) if rtts else (0.0, 0.0)
    return EpisodeResult(
        seed=seed,
        steps=steps,
        success=success,
        ret=ret,
        safety_stop=end == "safety_stop",
        end=end,
        versions=versions,
        statuses=dict(statuses),
        rtt_ms_p50=float(p50),
        rtt_ms_p99=float(p99),
    )
