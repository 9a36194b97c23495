"""Targeted refinement: spend the online budget where the policy fails, weakest first.

A target is a (task, condition) pair with its own policy bundle and env. The loop refines the
weakest target by one chunk of env steps, re-measures it, and retires a target once it reaches
the success threshold, until every target passes or the budget is spent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from flywheel.evaluation import evaluate
from flywheel.policies import NumpyPolicy, load_bundle


@dataclass
class Target:
    """One task (optionally under one domain-randomisation condition) to bring above threshold."""

    task: str
    bundle: Path
    env_fn: Callable[[], gym.Env]
    condition: str = "none"
    success: float | None = None
    """Last measured success rate (measured at the start when None)."""
    env_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.task if self.condition == "none" else f"{self.task}/{self.condition}"


@dataclass(frozen=True, kw_only=True)
class TargetedConfig:
    """Budget and stopping rule."""

    budget: int = 100_000
    """Total online env steps over all targets."""
    chunk: int = 10_000
    """Env steps per refinement round of one target."""
    threshold: float = 0.9
    """A target whose success reaches this is retired."""
    eval_episodes: int = 20
    """Episodes per success measurement."""
    eval_seed: int = 3_000_000
    """Seeds of the measurements (the same for every round: paired comparisons)."""


def chunk_size(budget: int, open_targets: int, minimum: int) -> int:
    """Env steps per chunk: the budget shared among the targets still under threshold, but no
    less than `minimum` (capped at the budget; a budget of 0 refines nothing).

    Why the floor: each chunk is a fresh online run from the target's bundle, and SAC's actor
    starts from scratch in every run (only the corpus carries over), taking ~20k lift steps to
    get back to where it started. Chunks smaller than that mostly return their start, so with
    many weak targets it is better to refine the weakest ones properly, weakest first, and
    leave the rest to the next round.
    """
    if budget < 0 or minimum < 1:
        raise ValueError(f"the online budget ({budget}) must be at least 0 and the chunk floor ({minimum}) at least 1")  # fmt: skip
    return max(budget // max(1, open_targets), min(minimum, budget))


def measure(t: Target, cfg: TargetedConfig) -> float:
    """Success rate of the target's current bundle."""
    actor = load_bundle(t.bundle, with_value=False).actor
    return evaluate(
        NumpyPolicy(actor), t.env_fn, episodes=cfg.eval_episodes, seed=cfg.eval_seed
    ).success_rate


def refine_targets(
    targets: list[Target],
    cfg: TargetedConfig,
    refine_chunk: Callable[[Target, int], Path],
) -> dict[str, Any]:
    """Run the weakest-first loop. `refine_chunk(target, env_steps)` returns the new bundle path.

    Returns the order of work, each target's success before and after, and the steps spent.
    """
    for t in targets:
        if t.success is None:
            t.success = measure(t, cfg)
    before = {t.name: t.success for t in targets}
    spent, order = 0, []
    while spent < cfg.budget:
        open_ = [t for t in targets if (t.success or 0.0) < cfg.threshold]
        if not open_:
            break
        t = min(open_, key=lambda x: (x.success, x.name))
        steps = min(cfg.chunk, cfg.budget - spent)
        t.bundle = refine_chunk(t, steps)
        t.env_steps += steps
        spent += steps
        t.success = measure(t, cfg)
        t.history.append({"env_steps": t.env_steps, "success": t.success, "bundle": str(t.bundle)})
        order.append(t.name)
    return {
        "order": order,
        "env_steps": spent,
        "targets": {
            t.name: {
                "before": before[t.name],
                "after": t.success,
                "env_steps": t.env_steps,
                "passed": (t.success or 0.0) >= cfg.threshold,
                "bundle": str(t.bundle),
                "history": t.history,
            }
            for t in targets
        },
    }
