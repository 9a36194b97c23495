"""The flywheel as Prefect flows: collect -> retrain -> refine -> deploy, round after round.

Thin wrappers: every step is one library call (`sim.collect`, `flywheel.training`,
`flywheel.online`, `flywheel.targeted`, `flywheel.evaluation`); the flows only order them,
retry I/O, and publish artifacts. Big things never pass through Prefect's result store: tasks
take and return paths, ids and small dicts (NO_CACHE, persist_result=False).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.progress import stage
from pipelines.report import publish_round, publish_summary
from pipelines.sim_policies import version_name

IO = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "retries": 2,
    "retry_delay_seconds": [2, 10],
}
"""I/O-bound tasks: retried with backoff (a busy disk or a locked file is usually transient)."""
COMPUTE = {"cache_policy": NO_CACHE, "persist_result": False}


@dataclass(frozen=True, kw_only=True)
class RoundConfig:
    """What one turn of the loop does; the defaults fit a 2-core machine in minutes."""

    tasks: tuple[str, ...] = ("lift",)
    """Sim tasks the flywheel works on."""
    demos: int = 50
    """Noisy expert demonstrations per task in the first round (stand-ins for teleoperation)."""
    demo_noise: float = 0.6
    """Expert noise of those demonstrations (mixed quality, labelled with success)."""
    policy_episodes: int = 30
    """Episodes per task collected with the deployed policy in later rounds (all are kept)."""
    steps: int = 2000
    """Gradient steps per offline stage (BC, IQL, improvement)."""
    online_steps: int = 40_000
    """Online env-step budget per round, spent weakest task first. SAC's fresh actor needs about
    20k lift steps to get back to the offline policy's level, so a 20k budget mostly returned
    the start; with 40k, round 1 went from 0.66 to 0.98 (docs/pipelines.md)."""
    refine_algo: str = "sac"
    """Online refinement: `sac` (RLPD-style, corpus in every batch: on lift it took round 1 from
    0.70 to 0.90 where PPO gave 0.72) or `ppo` (~6x faster per env step, stays near the offline
    policy; see docs/learning.md)."""
    online_chunk: int = 40_000
    """Fewest env steps one task's refinement gets in a round (`flywheel.targeted.chunk_size`):
    with several weak tasks, the weakest get this much each, not a slice too small to help."""
    target: float = 0.95
    """Success rate at which a task needs no more online refinement."""
    eval_episodes: int = 50
    """Evaluation episodes per policy (the same seeds for every policy and round)."""
    eval_seed: int = 7
    """First evaluation seed."""
    seed: int = 0
    """Base seed of collection and training."""

    def __post_init__(self) -> None:
        if self.online_steps < 0 or self.online_chunk < 1:
            raise ValueError(f"online_steps ({self.online_steps}) must be at least 0 (0: no refinement) and online_chunk ({self.online_chunk}) at least 1")  # fmt: skip
        if self.eval_episodes < 1:  # refused before a round's work, not at its first evaluation
            raise ValueError(f"eval_episodes ({self.eval_episodes}) must be at least 1")


def _env_fn(task_name: str):
    import sim

    return lambda: gym.make(sim.GYM_IDS[task_name])


@task(**IO)
def collect_task(task_name: str, episodes: int, policy: str, noise: float, seed: int, corpus: str, bundle: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Sim rollouts into the corpus (a bundle policy is registered in this process first)."""
    from sim.collect import collect

    if bundle is not None:
        from pipelines.sim_policies import register_bundle_policy

        policy = register_bundle_policy(bundle, policy)
    out = collect(task_name, episodes, policy=policy, noise=noise, seed=seed, corpus_path=corpus)
    return {k: v for k, v in out.items() if k != "episode_ids"}


@task(**COMPUTE)
def train_task(task_name: str, algo: str, steps: int, seed: int, corpus: str, home: str, gate_episodes: int = RoundConfig.eval_episodes) -> dict[str, Any]:  # fmt: skip
    """One offline run (BC or multi-step); resumes if a previous attempt was killed. The
    multi-step gate rolls out `gate_episodes` per policy it scores."""
    from flywheel.corpus import Corpus
    from flywheel.training import OfflineConfig, train_offline

    cfg = OfflineConfig(task=task_name, algo=algo, seed=seed, bc_steps=steps, iql_steps=steps)  # type: ignore[arg-type]
    cfg = replace(cfg, multistep=replace(cfg.multistep, steps=steps, gate_every=max(1, steps // 8), sim_episodes=gate_episodes))  # fmt: skip
    env_fn = _env_fn(task_name) if algo == "multistep" else None
    out = train_offline(Corpus(corpus), cfg, home=Path(home), env_fn=env_fn)
    return {"bundle": out["bundle"], "snapshot": out["snapshot"], "generations": out["metrics"].get("generations", [])}  # fmt: skip


@task(**COMPUTE)
def eval_task(bundle: str, task_name: str, episodes: int, seed: int) -> dict[str, Any]:
    """Success of a bundle on fixed seeds."""
    from flywheel.evaluation import evaluate
    from flywheel.policies import NumpyPolicy, load_bundle

    actor = load_bundle(bundle, with_value=False).actor
    return evaluate(NumpyPolicy(actor), _env_fn(task_name), episodes=episodes, seed=seed).to_json()


@task(**COMPUTE)
def refine_targets_task(bundles: dict[str, str], success: dict[str, float], cfg: dict[str, Any], corpus: str, home: str) -> dict[str, Any]:  # fmt: skip
    """Targeted online refinement over tasks, weakest first (flywheel.targeted)."""
    from flywheel.corpus import Corpus
    from flywheel.online import RefineConfig, refine
    from flywheel.policies import load_bundle
    from flywheel.targeted import Target, TargetedConfig, chunk_size, refine_targets

    c = RoundConfig(**{**cfg, "tasks": tuple(cfg["tasks"])})
    corp = Corpus(corpus)
    targets = [
        Target(task=t, bundle=Path(b), env_fn=_env_fn(t), success=success[t])
        for t, b in bundles.items()
    ]
    chunk = chunk_size(c.online_steps, sum(s < c.target for s in success.values()), c.online_chunk)
    tcfg = TargetedConfig(budget=c.online_steps, chunk=chunk, threshold=c.target, eval_episodes=c.eval_episodes, eval_seed=c.eval_seed)  # fmt: skip

    def refine_chunk(t: Target, steps: int) -> Path:
        out = Path(home) / "bundles" / f"{t.bundle.name}-{c.refine_algo}{t.env_steps + steps}"
        rcfg = RefineConfig(
            algo=c.refine_algo,  # type: ignore[arg-type]  # validated by RefineConfig
            env_steps=steps,
            eval_episodes=c.eval_episodes,
            eval_seed=c.eval_seed,
            seed=c.seed,
        )
        refine(load_bundle(t.bundle), t.env_fn, rcfg, out=out, corpus=corp)
        return out

    return refine_targets(targets, tcfg, refine_chunk)


@flow(name="collect")
def collect_flow(tasks: list[str], episodes: int, corpus: str, policy: str = "expert", noise: float = 0.6, seed: int = 0, bundles: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Demonstrations (expert) or deployed-policy rollouts for every task, into the corpus."""
    bundles = bundles or {}
    futures = {  # submitted: tasks run in parallel on a parallel task runner (threads, Dask)
        t: collect_task.submit(
            t,
            episodes,
            policy if t not in bundles else version_name(bundles[t]),
            noise,
            seed,
            corpus,
            bundles.get(t),
        )
        for t in tasks
    }
    return {t: f.result() for t, f in futures.items()}


@flow(name="retrain")
def retrain_flow(tasks: list[str], corpus: str, home: str, steps: int = 2000, seed: int = 0, eval_episodes: int = 50, eval_seed: int = 7) -> dict[str, Any]:  # fmt: skip
    """Snapshot -> BC (one-step) -> multi-step offline (gated) -> evaluation, per task. The
    gate's sim episodes are as many as the evaluation's (at least 2, for a paired error)."""
    out: dict[str, Any] = {}
    for t in tasks:
        bc = train_task(t, "bc", steps, seed, corpus, home)
        ms = train_task(t, "multistep", steps, seed, corpus, home, max(2, eval_episodes))
        out[t] = {
            "bc": bc["bundle"],
            "multistep": ms["bundle"],
            "snapshot": ms["snapshot"],
            "generations": ms["generations"],
            "success_bc": eval_task(bc["bundle"], t, eval_episodes, eval_seed)["success_rate"],
            "success_multistep": eval_task(ms["bundle"], t, eval_episodes, eval_seed)[
                "success_rate"
            ],
        }
    return out


@flow(name="refine")
def refine_flow(
    retrained: dict[str, Any], cfg: dict[str, Any], corpus: str, home: str
) -> dict[str, Any]:
    """Online refinement where success is under target; tasks at target keep their policy."""
    bundles = {t: r["multistep"] for t, r in retrained.items()}
    success = {t: r["success_multistep"] for t, r in retrained.items()}
    return refine_targets_task(bundles, success, cfg, corpus, home)


@task(**COMPUTE)
def promote_task(bundle: str, task_name: str, home: str, eval_episodes: int) -> dict[str, Any]:
    """Register a bundle in the task's registry and promote it to production through the gates.

    A refused candidate leaves production where it was: what robots run never gets worse.
    """
    import sim
    from flywheel.registry import GateConfig, Registry, promote

    reg = Registry(registry_root(home, task_name))
    rec, _ = reg.register(bundle, why="flywheel round: best-evaluated stage")
    gates = GateConfig(task=task_name, episodes=eval_episodes, min_episodes=min(30, eval_episodes))
    report = promote(
        reg,
        rec.version,
        "production",
        make_env=lambda t, v: gym.make(sim.GYM_IDS[t], variation=v),
        config=gates,
        why="flywheel round",
    )
    prod = reg.aliases().get("production")
    return {
        "version": rec.version,
        "decision": report.decision,
        "reason": report.reason,
        "gates": [g.to_json() for g in report.gates],
        "production": prod,
        "bundle": str(reg.bundle_path(prod)) if prod is not None else bundle,
    }


def registry_root(home: str | Path, task_name: str) -> Path:
    """One registry per task (a robot runs one task's controller): `$FLYWHEEL_HOME/registry/<task>`."""
    return Path(home) / "registry" / task_name


@flow(name="deploy")
def deploy_flow(candidates: dict[str, Any], home: str, eval_episodes: int = 50) -> dict[str, Any]:
    """Per task: the best-evaluated stage goes through the registry's promotion gates."""
    out = {}
    for t, cands in candidates.items():
        best = max(cands, key=lambda x: x["success"])
        out[t] = {"stage": best["stage"], **promote_task(best["bundle"], t, home, eval_episodes)}
    return out


@flow(name="flywheel-round")
def flywheel_round(round_no: int, cfg: dict[str, Any], corpus: str, home: str, deployed: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """One turn: collect (demos, then deployed-policy rollouts) -> retrain -> refine -> deploy."""
    log = get_run_logger()
    c = RoundConfig(**{**cfg, "tasks": tuple(cfg["tasks"])})
    tasks = list(c.tasks)
    seed = c.seed + 1000 * round_no
    if not deployed:
        collected = collect_flow(tasks, c.demos, corpus, "expert", c.demo_noise, seed)
    else:
        collected = collect_flow(tasks, c.policy_episodes, corpus, seed=seed, bundles=deployed)
    retrained = retrain_flow(
        tasks, corpus, home, c.steps, c.seed + round_no, c.eval_episodes, c.eval_seed
    )
    refined = refine_flow(retrained, asdict(c), corpus, home)
    candidates = {}
    for t in tasks:
        r, f = retrained[t], refined["targets"][t]
        candidates[t] = [
            {"stage": "bc", "bundle": r["bc"], "success": r["success_bc"]},
            {"stage": "multistep", "bundle": r["multistep"], "success": r["success_multistep"]},
            {"stage": "online", "bundle": f["bundle"], "success": f["after"]},
        ]
    stage(f"round {round_no}: deploy")
    chosen = deploy_flow(candidates, home, c.eval_episodes)
    result = {
        "round": round_no,
        "collected": {
            t: {"episodes": v["episodes"], "success_rate": v["success_rate"]}
            for t, v in collected.items()
        },
        "tasks": {
            t: {
                "bc": retrained[t]["success_bc"],
                "multistep": retrained[t]["success_multistep"],
                "online": refined["targets"][t]["after"],
                "online_env_steps": refined["targets"][t]["env_steps"],
                "generations": len(retrained[t]["generations"]) - 1,
                "ope_accepted": retrained[t]["generations"][-1]["ope_accepted"]
                if retrained[t]["generations"]
                else None,
                "accepted_generations": sum(g["accepted"] for g in retrained[t]["generations"]),
                "generation_log": retrained[t]["generations"],
                "online_log": refined["targets"][t]["history"],
                "deployed": chosen[t]["stage"],
                "promotion": chosen[t]["decision"],
                "production_version": chosen[t]["production"],
            }
            for t in tasks
        },
        "deployed": {t: chosen[t]["bundle"] for t in tasks},
    }
    log.info("round %d: %s", round_no, result["tasks"])
    publish_round(result, Path(home))
    return result


@flow(name="flywheel")
def flywheel_rounds(
    rounds: int, cfg: dict[str, Any], corpus: str, home: str
) -> list[dict[str, Any]]:
    """Several turns of the loop; each round collects with the previous round's deployment."""
    from flywheel.corpus import Corpus

    Corpus.open_or_create(corpus)
    results, deployed = [], None
    for r in range(1, rounds + 1):
        res = flywheel_round(r, cfg, corpus, home, deployed)
        deployed = res["deployed"]
        results.append(res)
    publish_summary(results, Path(home))
    return results
