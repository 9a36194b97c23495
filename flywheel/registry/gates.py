"""Promotion gates: every check a version must pass before an alias moves to it, with figures.

    integrity   the bundle loads (hashes, no pickle) and its schema fits the target robot/task
    evaluation  success on the task suite >= the incumbent's + margin, on >= min_episodes
                paired seeds, with 95% Wilson intervals and a Newcombe interval of the difference
    latency     p99 of a full controller tick (validation, policy, clipping) under the budget,
                on the backend the controller will run (its export parity-checked first)
    canary      (optional, production only) enough real episodes run from staging, none of
                them ended by a safety stop

`--force` can override evaluation, latency and canary; never integrity (a tampered bundle, or
one whose observations the robot does not have, cannot be run safely at all).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from flywheel.deploy.client import RobotSpec
from flywheel.deploy.controller import Controller, ControllerConfig
from flywheel.deploy.deployed import (
    DeployedPolicy,
    parity_observations,
    recorded_observations,
    runner_for,
)
from flywheel.deploy.export import ExportError
from flywheel.deploy.observations import save_batch, stack_records
from flywheel.deploy.runners import Backend, input_keys
from flywheel.evaluation import evaluate, wilson_interval
from flywheel.policies import Bundle, BundleError, NumpyPolicy
from flywheel.registry.store import Registry

MakeEnv = Callable[[str, str], Any]
"""make_env(task, variation) -> a Gymnasium env; the CLI passes the simulator's."""


@dataclass(frozen=True, kw_only=True)
class GateConfig:
    """Thresholds of the promotion gates; recorded with every decision."""

    task: str | None = None
    """Target task; default: the candidate's schema task."""
    variations: tuple[str, ...] = ("none",)
    """The task suite: one evaluation per domain-randomisation condition, pooled."""
    episodes: int = 50
    """Evaluation episodes per variation, per policy (the same seeds for both)."""
    min_episodes: int = 30
    """Fewer pooled episodes than this make a comparison meaningless: the gate fails."""
    margin: float = 0.0
    """Candidate success must be at least the incumbent's plus this (absolute, 0..1)."""
    min_success: float = 0.0
    """With no incumbent, the candidate's success must reach this."""
    seed: int = 10_000
    """First evaluation seed (far from training seeds)."""
    latency_budget_ms: float | None = None
    """p99 budget of one controller tick; default 10% of the control period."""
    latency_samples: int = 300
    """Ticks timed for the latency gate."""
    backend: Backend = "onnx"
    """Backend the controller will run (latency is measured on it)."""
    canary_episodes: int = 0
    """Real episodes without a safety stop needed before production; 0 skips the gate."""
    reuse_evals: bool = True
    """Reuse a stored evaluation with the same task, variation, episodes and seed."""

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.min_episodes < 1 or not self.variations:
            raise ValueError("episodes and min_episodes must be >= 1, variations non-empty")
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError(f"margin {self.margin} must be in [0, 1] (a success-rate difference)")


@dataclass
class Gate:
    """One gate's outcome; `figures` are what the decision was based on."""

    name: str
    passed: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)
    overridable: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """The robot/task a version is promoted for."""

    task: str
    """Task name the bundle's schema must carry."""
    robot: RobotSpec
    """Observations, action shape and control rate of the robot (or sim env)."""
    action_low: float
    """Lowest action the robot accepts (any dimension)."""
    action_high: float
    """Highest action the robot accepts."""

    @classmethod
    def from_env(cls, task: str, env: Any) -> TargetSpec:
        space = env.action_space
        return cls(
            task=task,
            robot=RobotSpec.from_env(env),
            action_low=float(np.min(space.low)),
            action_high=float(np.max(space.high)),
        )


def integrity_gate(
    registry: Registry, version: int, target: TargetSpec
) -> tuple[Gate, Bundle | None]:
    try:
        bundle = registry.load(version)
    except BundleError as e:
        return Gate(
            "integrity",
            False,
            f"bundle does not load safely: {e}",
            {"error": str(e)},
            overridable=False,
        ), None
    s = bundle.schema
    problems = []
    if s["task"] != target.task:
        problems.append(f"bundle is for task {s['task']!r}, target is {target.task!r}")
    problems += target.robot.problems(s)
    lo, hi = float(np.min(s["action"]["low"])), float(np.max(s["action"]["high"]))
    if lo < target.action_low or hi > target.action_high:
        problems.append(
            f"action limits [{lo}, {hi}] exceed the robot's [{target.action_low}, {target.action_high}]"
        )
    hz = target.robot.control_hz
    if hz is not None and abs(float(s["control_hz"]) - hz) > 1e-9:
        problems.append(f"control rate {s['control_hz']} Hz, the robot runs {hz} Hz")
    figures = {
        "bundle_hash": bundle.content_hash,
        "schema_hash": s["hash"],
        "normalizer_hash": bundle.normalizer.fingerprint(),
        "bundle_task": s["task"],
        "target_task": target.task,
        "problems": problems,
    }
    reason = "loads; schema matches the target" if not problems else "; ".join(problems)
    return Gate("integrity", not problems, reason, figures, overridable=False), bundle


def eval_key(task: str, variation: str, cfg: GateConfig) -> str:
    return f"{task}-{variation}-n{cfg.episodes}-s{cfg.seed}"


def evaluate_version(
    registry: Registry, version: int, bundle: Bundle, task: str, make_env: MakeEnv, cfg: GateConfig
) -> dict[str, Any]:
    """Pooled success over the suite, from the registry's stored results where possible."""
    parts = []
    for var in cfg.variations:
        key = eval_key(task, var, cfg)
        doc = registry.get_eval(version, key) if cfg.reuse_evals else None
        if doc is None:
            r = evaluate(
                NumpyPolicy(bundle.actor),
                lambda v=var: make_env(task, v),
                episodes=cfg.episodes,
                seed=cfg.seed,
                keep_records=True,
            )
            obs = stack_records(r.records, input_keys(bundle.actor))
            save_batch(registry.evals_dir(version) / f"{key}.obs.npz", obs)
            doc = {
                **r.to_json(),
                "task": task,
                "variation": var,
                "seed": cfg.seed,
                "successes": int(np.sum(r.successes)),
            }
            registry.save_eval(version, key, doc)
        parts.append(doc)
    n = sum(p["episodes"] for p in parts)
    k = sum(p["successes"] for p in parts)
    return {
        "version": version,
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else 0.0,
        "success_ci95": list(wilson_interval(k, n)),
        "mean_return": float(
            np.average([p["mean_return"] for p in parts], weights=[p["episodes"] for p in parts])
        ),
        "variations": list(cfg.variations),
    }


def newcombe_diff(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """95% interval of p1 - p2 from the two Wilson intervals (Newcombe 1998, method 10);
    conservative here, since the two evaluations share seeds (paired)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1)
    l2, u2 = wilson_interval(k2, n2)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def evaluation_gate(
    registry: Registry,
    version: int,
    bundle: Bundle,
    incumbent: int | None,
    task: str,
    make_env: MakeEnv,
    cfg: GateConfig,
) -> Gate:
    cand = evaluate_version(registry, version, bundle, task, make_env, cfg)
    figures: dict[str, Any] = {
        "candidate": cand,
        "margin": cfg.margin,
        "min_episodes": cfg.min_episodes,
    }
    if cand["episodes"] < cfg.min_episodes:
        return Gate(
            "evaluation",
            False,
            f"{cand['episodes']} episodes < min_episodes {cfg.min_episodes}: too few to compare",
            figures,
        )
    if incumbent is None:
        ok = cand["success_rate"] >= cfg.min_success
        figures["required"] = cfg.min_success
        return Gate(
            "evaluation",
            ok,
            f"no incumbent; success {cand['success_rate']:.3f} {'>=' if ok else '<'} min_success {cfg.min_success}",
            figures,
        )
    inc = evaluate_version(registry, incumbent, registry.load(incumbent), task, make_env, cfg)
    lo, hi = newcombe_diff(cand["successes"], cand["episodes"], inc["successes"], inc["episodes"])
    required = inc["success_rate"] + cfg.margin
    ok = cand["success_rate"] >= required - 1e-12
    figures |= {
        "incumbent": inc,
        "required": required,
        "difference": cand["success_rate"] - inc["success_rate"],
        "difference_ci95": [lo, hi],
    }
    rel = ">=" if ok else "<"
    reason = (
        f"success {cand['success_rate']:.3f} (95% CI {cand['success_ci95'][0]:.2f}-{cand['success_ci95'][1]:.2f}) "
        f"{rel} incumbent v{incumbent} {inc['success_rate']:.3f} + margin {cfg.margin}"
    )
    return Gate("evaluation", ok, reason, figures)


def latency_gate(registry: Registry, version: int, bundle: Bundle, cfg: GateConfig) -> Gate:
    """p99 of a whole controller tick on recorded observations, one thread."""
    obs = recorded_observations(registry, version)
    try:
        runner = runner_for(bundle, cfg.backend, registry.exports_dir(version), obs)
    except ExportError as e:
        return Gate(
            "latency",
            False,
            f"{cfg.backend} export unusable: {e}",
            {"backend": cfg.backend},
            overridable=False,
        )
    policy = DeployedPolicy(bundle=bundle, runner=runner, version=version, backend=cfg.backend)
    period_ms = 1e3 / float(bundle.schema["control_hz"])
    budget = cfg.latency_budget_ms if cfg.latency_budget_ms is not None else 0.1 * period_ms
    if obs is None:
        obs = parity_observations(bundle, None)
    keys = input_keys(bundle.actor)
    frames = [{k: obs[k][i] for k in keys} for i in range(len(obs[keys[0]]))]
    ctl = Controller(policy, ControllerConfig(deadline_periods=1e6))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(min(50, cfg.latency_samples)):
            ctl.act(frames[i % len(frames)])
        times = []
        for i in range(cfg.latency_samples):
            t0 = time.perf_counter()
            ctl.act(frames[i % len(frames)])
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(threads)
    p50, p99 = np.percentile(times, [50, 99])
    figures = {
        "backend": cfg.backend,
        "samples": len(times),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "max_ms": float(np.max(times)),
        "budget_ms": budget,
    }
    ok = p99 <= budget
    return Gate(
        "latency",
        bool(ok),
        f"tick p99 {p99:.3f} ms {'<=' if ok else '>'} budget {budget:.3f} ms ({cfg.backend})",
        figures,
    )


def canary_gate(registry: Registry, version: int, cfg: GateConfig) -> Gate:
    eps = registry.episodes(version)
    stops = sum(int(e.get("safety_stops", 0)) for e in eps)
    figures = {"episodes": len(eps), "required": cfg.canary_episodes, "safety_stops": stops}
    ok = len(eps) >= cfg.canary_episodes and stops == 0
    reason = f"{len(eps)} real episodes (need {cfg.canary_episodes}), {stops} safety stops"
    return Gate("canary", ok, reason, figures)


def run_gates(
    registry: Registry,
    version: int,
    incumbent: int | None,
    to: str,
    *,
    make_env: MakeEnv,
    config: GateConfig,
) -> list[Gate]:
    """Every gate for moving `to` to `version`; stops after a failed integrity gate."""
    rec = registry.record(version)
    task = config.task or rec.task
    env = make_env(task, config.variations[0])
    try:
        target = TargetSpec.from_env(task, env)
    finally:
        env.close()
    first, bundle = integrity_gate(registry, version, target)
    if bundle is None or not first.passed:
        return [first]
    gates = [first, evaluation_gate(registry, version, bundle, incumbent, task, make_env, config)]
    gates.append(latency_gate(registry, version, bundle, config))
    if to == "production" and config.canary_episodes > 0:
        gates.append(canary_gate(registry, version, config))
    return gates
