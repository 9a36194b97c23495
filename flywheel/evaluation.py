"""Evaluating a policy by rollouts; knows nothing about how the policy was trained.

The same seeds give the same episodes, so two policies compared on one seed range face the same
initial states and randomisation draws (a paired comparison).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from flywheel.rollout import EnvPool, EpisodeRecord, PolicyFn


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate: honest at small n and near 0 or 1."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_gain(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean per-seed difference a - b of two policies' outcomes on the same seeds, and its
    standard error. Pairing removes what the seeds share (an easy start is easy for both)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a paired gain needs the same seeds for both, at least 2 ({len(a)} vs {len(b)})")  # fmt: skip
    d = np.asarray(a, float) - np.asarray(b, float)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


@dataclass
class EvalResult:
    """Outcome of `evaluate`."""

    episodes: int
    success_rate: float
    mean_return: float
    success_ci95: tuple[float, float]
    env_steps: int
    returns: list[float] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    records: list[EpisodeRecord] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "episodes": self.episodes,
            "success_rate": self.success_rate,
            "mean_return": self.mean_return,
            "success_ci95": list(self.success_ci95),
            "env_steps": self.env_steps,
        }


def evaluate(
    policy: PolicyFn,
    env_fn: Callable[[], gym.Env],
    *,
    episodes: int = 20,
    seed: int = 0,
    num_envs: int = 4,
    reset_options: Callable[[int], dict | None] | None = None,
    keep_records: bool = False,
) -> EvalResult:
    """Run episodes with seeds `seed .. seed+episodes-1` and summarise them."""
    if not isinstance(episodes, int) or episodes < 1:  # no episodes: a NaN success rate
        raise ValueError(f"episodes must be a whole number, at least 1, not {episodes!r}")
    pool = EnvPool(
        [env_fn] * min(num_envs, episodes),
        seed=seed,
        record=keep_records,
        reset_options=reset_options,
    )
    done: dict[int, EpisodeRecord] = {}
    steps = 0
    try:
        while len(done) < episodes:
            _, _, _, _, _, finished = pool.step(policy(pool.batch()))
            steps += pool.n
            for rec in finished:
                if rec.seed is not None and rec.seed < seed + episodes:
                    done[rec.seed] = rec
    finally:
        pool.close()
    recs = [done[s] for s in sorted(done)]
    wins = [r.success for r in recs]
    rets = [r.ret for r in recs]
    return EvalResult(
        episodes=len(recs),
        success_rate=float(np.mean(wins)),
        mean_return=float(np.mean(rets)),
        success_ci95=wilson_interval(int(np.sum(wins)), len(recs)),
        env_steps=steps,
        returns=rets,
        successes=wins,
        seeds=sorted(done),
        records=recs if keep_records else [],
    )
