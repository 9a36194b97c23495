"""Learning quality on our sim tasks: BC vs multi-step vs d3rlpy, then online refinement vs SB3.

    python -m benchmarks.learning_quality [--quick] [--tasks push,lift,pick_place,drawer]
        [--budget 300000] [--refine sac,ppo] [--sac-budget 30000] [--no-sb3] [--out DIR]
        [--eval-episodes 500] [--awr-weight 0.1] [--gate-episodes 600] [--seed 0]

Per task, from 50 noisy expert demos (the same corpus for everyone):
- offline: success of our BC, our multi-step (IQL critic + gated PPO-clip generations), and of
  d3rlpy 2.8.1 IQL and TD3+BC trained on the same transitions for the same gradient steps
  (their policies saved as TorchScript and run in our simulator);
- online: our refinement of the multi-step policy with `--budget` env steps, by RLPD-style SAC
  (corpus in every batch) and by PPO, each on its own copy of the corpus; floor: 95% success on
  lift and pick_place; vs SB3 PPO from scratch with the same budget and SB3 SAC from scratch with `--sac-budget` (SAC does one
  gradient step per env step, ~100 steps/s on one CPU core: 300k would take ~50 min per task);
- every success is measured on the same `--eval-episodes` evaluation seeds (500 by default),
  and each figure carries its 95% Wilson interval (`ci95`): at 100 episodes a success rate near
  0.5 has a standard error of 5 points, as large as the gains being judged. Multi-step's gain
  over BC is also given paired per seed (`paired_gain`, `paired_gain_half95`), and the average
  gain over tasks with its 95% half-width (`half95_points`).
- every multi-step generation's policy is scored on the evaluation seeds too, to check the gate:
  `ope_rank_agreement` (of pairs of generations, the fraction AM-Q orders as those seeds do;
  Uni-O4 reports ~80%) and `gate_decision_agreement` (of the gate's accept/reject decisions,
  the fraction those seeds confirm; chance is 0.5).
Plots (PNG in --out): success vs env steps of the refinement, with the peers' final points; and
per-generation OPE score vs success of the multi-step candidates (evaluation seeds, and the
gate's own sim episodes).
JSON lines on stdout, a table on stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
import torch

from benchmarks import peers, reporting
from flywheel.algorithms.multistep import MultiStepConfig
from flywheel.corpus import Corpus, Filter, TrainingCache
from flywheel.evaluation import EvalResult, evaluate, paired_gain
from flywheel.online import RefineConfig, refine
from flywheel.policies import NumpyPolicy, load_bundle
from flywheel.training import OfflineConfig, train_offline

EVAL_SEED, DEMOS = 123, 50
EVAL_EPISODES = 500
"""Default evaluation size (`--eval-episodes`)."""
REFINE_FLOOR_TASKS = ("lift", "pick_place")
"""The issue's floor: refinement reaches 95% success on these within the budget."""


def emit(metric: str, ours: float, anchor: str, anchor_value: float | None, **extra) -> None:
    reporting.emit("learning", metric, ours, anchor, anchor_value, digits=4, **extra)


class TorchScriptPolicy:
    """A d3rlpy policy saved as TorchScript: obs dict -> concatenated sorted keys -> action."""

    def __init__(self, path: Path) -> None:
        self.module = torch.jit.load(str(path)).eval()

    @torch.no_grad()
    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        x = np.concatenate([obs[k].reshape(len(obs[k]), -1) for k in sorted(obs)], 1)
        return self.module(torch.as_tensor(x, dtype=torch.float32)).clamp(-1, 1).numpy()


class SB3Policy:
    """An SB3 model as a batched deterministic policy."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.model.predict(obs, deterministic=True)[0]


def score(policy: Any, env_fn: Any, episodes: int) -> EvalResult:
    """`policy` on the shared evaluation seeds (the same episodes for every contender)."""
    return evaluate(policy, env_fn, episodes=episodes, seed=EVAL_SEED)


def ci95(r: EvalResult | dict[str, Any]) -> list[float]:
    """The success rate's 95% interval, rounded, from a result or its JSON."""
    lo, hi = r.success_ci95 if isinstance(r, EvalResult) else r["success_ci95"]
    return [round(lo, 3), round(hi, 3)]


def gain_ci95(a: EvalResult, b: EvalResult) -> tuple[float, float]:
    """Success of `a` minus `b`, paired per seed (the same initial state for both), and the
    95% half-width of that difference: the interval of the mean per-seed difference, not of
    two independent rates."""
    if a.seeds != b.seeds:
        raise ValueError("a paired gain needs both results on the same seeds")
    gain, se = paired_gain(a.successes, b.successes)
    return gain, 1.96 * se


def scored_ope(g: dict[str, Any]) -> float:
    """The AM-Q score of the policy a generation scored: the start at 0, the candidate after."""
    return g["ope_accepted"] if g["generation"] == 0 else g["ope_candidate"]


def ope_rank_agreement(gens: list[dict[str, Any]]) -> float | None:
    """Of the pairs of generations whose true success differs, the fraction that OPE orders the
    same way (Uni-O4 reports about 80%); None without such a pair."""
    ope = [scored_ope(g) for g in gens]
    true = [g["true_success"] for g in gens]
    pairs = [(i, j) for i in range(len(gens)) for j in range(i) if true[i] != true[j]]
    agree = [(ope[i] - ope[j]) * (true[i] - true[j]) > 0 for i, j in pairs]
    return float(np.mean(agree)) if agree else None


def gate_decision_agreement(gens: list[dict[str, Any]]) -> float | None:
    """The fraction of gate decisions that the evaluation seeds confirm: accepted candidates
    truly better than the pi_old they replaced, rejected ones not; None without a decision.
    Differences within the evaluation's own noise (a standard error of ~5 points at 100
    episodes, ~2 at 500) are counted as they fall: on close candidates a noisy verdict too."""
    if len(gens) < 2:
        return None
    accepted_true, right = gens[0]["true_success"], []
    for g in gens[1:]:
        better = g["true_success"] > accepted_true
        right.append(better == g["accepted"])
        if g["accepted"]:
            accepted_true = g["true_success"]
    return float(np.mean(right))


def offline(task: str, corpus: Corpus, env_fn: Any, steps: int, tmp: Path, episodes: int, awr_weight: float = MultiStepConfig.awr_weight, gate_episodes: int = MultiStepConfig.sim_episodes, seed: int = 0, d3rlpy: bool = True) -> dict[str, Any]:  # fmt: skip
    """Our BC and multi-step, and d3rlpy IQL / TD3+BC, on one corpus; success of each.

    Every multi-step generation's policy is also scored on the evaluation seeds (`true_success`):
    the gate decides on its OPE and its own sim episodes; this shows how often it decided right.
    """
    base = OfflineConfig(task=task, bc_steps=steps, iql_steps=steps, seed=seed)
    base = replace(base, multistep=replace(base.multistep, steps=steps, gate_every=max(steps // 5, 1), awr_weight=awr_weight, sim_episodes=gate_episodes))  # fmt: skip
    bc = train_offline(corpus, replace(base, algo="bc"), home=tmp / "home")
    truth: dict[int, EvalResult] = {}

    def observe(record: dict[str, Any], actor: Any) -> None:
        truth[record["generation"]] = score(NumpyPolicy(copy.deepcopy(actor).cpu()), env_fn, episodes)  # fmt: skip

    ms = train_offline(corpus, base, home=tmp / "home", env_fn=env_fn, observe=observe)
    gens = ms["metrics"]["generations"]
    for g in gens:
        g["true_success"], g["true_ci95"] = truth[g["generation"]].success_rate, ci95(truth[g["generation"]])  # fmt: skip
    out: dict[str, Any] = {"ms_bundle": ms["bundle"], "generations": gens}
    out["ope_rank_agreement"], out["gate_decision_agreement"] = ope_rank_agreement(gens), gate_decision_agreement(gens)  # fmt: skip
    got = {}
    for name, bundle in (("bc", bc["bundle"]), ("multistep", ms["bundle"])):
        got[name] = score(NumpyPolicy(load_bundle(bundle).actor), env_fn, episodes)
        out[name], out[f"{name}_ci95"] = got[name].success_rate, ci95(got[name])
    out["gain_vs_bc"], out["gain_vs_bc_half95"] = gain_ci95(got["multistep"], got["bc"])
    if d3rlpy and peers.available():
        cache = TrainingCache.build(corpus, corpus.snapshot(Filter(task=task)))  # what ours sees
        npz = peers.to_d3rlpy_npz(cache, tmp / f"{task}.npz")
        for algo in ("iql", "td3bc"):
            pt = tmp / f"{task}-{algo}.pt"
            got = peers.run_peer("d3rlpy_train.py", npz, algo, steps, pt, timeout=3600)
            peer = score(TorchScriptPolicy(pt), env_fn, episodes) if got else None
            out[f"d3rlpy_{algo}"] = peer.success_rate if peer else None
            out[f"d3rlpy_{algo}_ci95"] = ci95(peer) if peer else None
    return out


def sb3_from_scratch(algo: str, env_fn: Any, budget: int, episodes: int) -> EvalResult:
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.env_util import make_vec_env

    if algo == "ppo":
        vec = make_vec_env(env_fn, n_envs=8, seed=0)
        model: Any = PPO("MultiInputPolicy", vec, n_steps=256, batch_size=256, device="cpu", seed=0,
                         policy_kwargs={"net_arch": [256, 256]}, verbose=0)  # fmt: skip
    else:
        vec = make_vec_env(env_fn, n_envs=1, seed=0)
        model = SAC("MultiInputPolicy", vec, device="cpu", seed=0, policy_kwargs={"net_arch": [256, 256]}, verbose=0)  # fmt: skip
    model.learn(total_timesteps=budget)
    vec.close()
    return score(SB3Policy(model), env_fn, episodes)


def plot(results: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (task, r) in enumerate(results.items()):
        color = f"C{i}"
        for algo, style in (("sac", "-o"), ("ppo", "--s")):
            if f"refine_{algo}" in r:
                checks = r[f"refine_{algo}"]["checks"]
                ax.plot([c["env_steps"] for c in checks], [c["success"] for c in checks], style, ms=3, color=color, label=f"{task}: ours {algo}")  # fmt: skip
        for key, marker in (("sb3_ppo", "s"), ("sb3_sac", "^")):
            if r.get(key) is not None:
                ax.plot([r[f"{key}_budget"]], [r[key]], marker, color=color, mfc="none", label=f"{task}: {key} (scratch)")  # fmt: skip
    ax.set(xlabel="online env steps", ylabel="success (held-out check seeds)", ylim=(-0.02, 1.02))
    if ax.get_legend_handles_labels()[0]:  # nothing refined (`--refine ''`): no legend
        ax.legend(fontsize=6, ncol=2)
    curve = out / "success_vs_env_steps.png"
    fig.tight_layout()
    fig.savefig(curve, dpi=120)
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, (task, r) in enumerate(results.items()):
        start, *gens = r["generations"]
        ope = [scored_ope(g) for g in gens]
        ax.scatter([scored_ope(start)], [start["true_success"]], color=f"C{i}", marker="s", facecolors="none", label=f"{task}: BC start")  # fmt: skip
        ax.scatter(ope, [g["true_success"] for g in gens], color=f"C{i}", label=f"{task}: evaluation seeds")  # fmt: skip
        if all(g["sim_candidate"] is not None for g in gens):
            ax.scatter(ope, [g["sim_candidate"] for g in gens], color=f"C{i}", marker="x", s=12, label=f"{task}: gate's sim episodes")  # fmt: skip
    ax.set(xlabel="AM-Q OPE score", ylabel="success")
    ax.legend(fontsize=6)
    scatter = out / "ope_vs_true_success.png"
    fig.tight_layout()
    fig.savefig(scatter, dpi=120)
    plt.close("all")
    return [curve, scatter]


def run(tasks: list[str], steps: int, budget: int, sac_budget: int, out: Path, tmp: Path, refiners: list[str], sb3: bool, episodes: int = EVAL_EPISODES, awr_weight: float = MultiStepConfig.awr_weight, gate_episodes: int = MultiStepConfig.sim_episodes, seed: int = 0, d3rlpy: bool = True) -> None:  # fmt: skip
    import sim
    from sim.collect import collect

    torch.set_num_threads(1)
    results: dict[str, dict[str, Any]] = {}
    for task in tasks:
        path = tmp / f"q-{task}.zarr"
        collect(task, DEMOS, noise=sim.DEFAULT_NOISE, seed=0, corpus_path=path)
        corpus = Corpus(path)
        env_fn = lambda t=task: gym.make(sim.GYM_IDS[t])  # noqa: E731
        r = offline(
            task, corpus, env_fn, steps, tmp, episodes, awr_weight, gate_episodes, seed, d3rlpy
        )
        ms_ci = r["multistep_ci95"]
        emit("success_multistep_vs_bc", r["multistep"], "our-bc", r["bc"], task=task, demos=DEMOS, steps=steps, episodes=episodes, awr_weight=awr_weight, gate_episodes=gate_episodes, seed=seed, ci95=ms_ci, anchor_ci95=r["bc_ci95"], paired_gain=round(r["gain_vs_bc"], 4), paired_gain_half95=round(r["gain_vs_bc_half95"], 4))  # fmt: skip
        if r["ope_rank_agreement"] is not None:
            emit("ope_rank_agreement", r["ope_rank_agreement"], "uni-o4-reported", 0.8, task=task, generations=len(r["generations"]), episodes=episodes)  # fmt: skip
        if r["gate_decision_agreement"] is not None:
            emit("gate_decision_agreement", r["gate_decision_agreement"], "chance", 0.5, task=task, decisions=len(r["generations"]) - 1, episodes=episodes)  # fmt: skip
        for algo in ("iql", "td3bc"):
            if f"d3rlpy_{algo}" in r:
                emit("success_multistep_vs_d3rlpy", r["multistep"], f"d3rlpy-2.8.1-{algo}", r[f"d3rlpy_{algo}"], task=task, steps=steps, episodes=episodes, ci95=ms_ci, anchor_ci95=r[f"d3rlpy_{algo}_ci95"])  # fmt: skip
        for algo in refiners:  # each from the multi-step bundle, on its own copy of the corpus
            own = tmp / f"q-{task}-{algo}.zarr"
            shutil.copytree(path, own)
            cfg = RefineConfig(algo=algo, env_steps=budget, eval_episodes=episodes, eval_seed=EVAL_SEED)  # fmt: skip
            ref = refine(load_bundle(r["ms_bundle"]), env_fn, cfg, out=tmp / f"ref-{task}-{algo}", corpus=Corpus(own))  # fmt: skip
            lineage = load_bundle(ref["bundle"]).lineage  # the before/after results in full
            after, before = ci95(lineage["success_after"]), ci95(lineage["success_before"])
            r[f"refine_{algo}"] = {"after": ref["success_after"], "after_ci95": after, "checks": ref["metrics"]["checks"], "seconds": ref["seconds"], "confirmation": ref["metrics"]["confirmation"]}  # fmt: skip
            emit("success_online_vs_multistep", ref["success_after"], "our-multistep", ref["success_before"], task=task, algo=algo, env_steps=budget, seconds=round(ref["seconds"]), episodes=episodes, ci95=after, anchor_ci95=before)  # fmt: skip
            if task in REFINE_FLOOR_TASKS:
                emit("success_online_floor", ref["success_after"], "floor", 0.95, task=task, algo=algo, env_steps=budget, episodes=episodes, ci95=after)  # fmt: skip
        best = max((r[f"refine_{a}"]["after"], a) for a in refiners) if refiners else None
        for algo, n_steps in (("ppo", budget), ("sac", sac_budget)) if sb3 else ():
            if n_steps <= 0:
                continue
            got = sb3_from_scratch(algo, env_fn, n_steps, episodes)
            r[f"sb3_{algo}"], r[f"sb3_{algo}_ci95"], r[f"sb3_{algo}_budget"] = got.success_rate, ci95(got), n_steps  # fmt: skip
            if best is not None:
                emit("success_online_vs_sb3", best[0], f"sb3-2.9.2-{algo}-scratch", got.success_rate, task=task, algo=best[1], env_steps=budget, peer_env_steps=n_steps, episodes=episodes, ci95=r[f"refine_{best[1]}"]["after_ci95"], anchor_ci95=ci95(got))  # fmt: skip
        results[task] = r
        (out / "quality.json").parent.mkdir(parents=True, exist_ok=True)
        (out / "quality.json").write_text(json.dumps(results, indent=1, default=str))
    for p in plot(results, out):
        print(json.dumps({"bench": "learning", "metric": "plot", "path": str(p)}), flush=True)
    gains = [r["gain_vs_bc"] for r in results.values()]  # tasks independent: variances add
    half = float(np.sqrt(np.sum(np.square([r["gain_vs_bc_half95"] for r in results.values()])))) / len(gains)  # fmt: skip
    emit("success_multistep_minus_bc_avg_points", 100 * float(np.mean(gains)), "floor", 10.0, tasks=",".join(tasks), half95_points=round(100 * half, 2), awr_weight=awr_weight, gate_episodes=gate_episodes, seed=seed)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="lift only, 1k offline steps, 20k online")
    ap.add_argument("--tasks", default="push,lift,pick_place,drawer")
    ap.add_argument("--steps", type=int, default=5000, help="gradient steps per offline stage")
    ap.add_argument("--budget", type=int, default=300_000, help="online env steps (ours, SB3 PPO)")
    ap.add_argument("--sac-budget", type=int, default=30_000, help="SB3 SAC env steps")
    ap.add_argument("--refine", default="sac,ppo", help="our refinement algorithms ('' for none)")
    ap.add_argument("--no-sb3", action="store_true", help="skip the SB3 from-scratch peers")
    ap.add_argument("--no-d3rlpy", action="store_true", help="skip the d3rlpy offline peers (they run when .venv-peers exists)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("bench-out/learning"))
    ap.add_argument("--eval-episodes", type=int, default=EVAL_EPISODES, help="episodes per success figure (same seeds for all)")  # fmt: skip
    ap.add_argument("--awr-weight", type=float, default=MultiStepConfig.awr_weight, help="weight of the improvement's AWR term on dataset actions (MultiStepConfig.awr_weight)")  # fmt: skip
    ap.add_argument("--gate-episodes", type=int, default=MultiStepConfig.sim_episodes, help="sim rollouts per gate decision (MultiStepConfig.sim_episodes)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="training seed of every offline stage (the demos stay those of seed 0)")  # fmt: skip
    a = ap.parse_args()
    if a.eval_episodes < 1:  # before an hour of training, not at its first evaluation
        ap.error(f"--eval-episodes must be at least 1, not {a.eval_episodes}")
    try:  # the training configs' own checks, before an hour of training
        OfflineConfig(task="check", seed=a.seed, multistep=MultiStepConfig(awr_weight=a.awr_weight, sim_episodes=a.gate_episodes))  # fmt: skip
    except ValueError as e:
        ap.error(f"--seed / --awr-weight / --gate-episodes: {e}")
    if a.quick:
        a.tasks, a.steps, a.budget, a.sac_budget = "lift", 1000, 20_000, 5_000
    with tempfile.TemporaryDirectory(prefix="fw-quality-") as d:
        refiners = [x for x in a.refine.split(",") if x]
        run(a.tasks.split(","), a.steps, a.budget, a.sac_budget, a.out, Path(d), refiners, not a.no_sb3, a.eval_episodes, a.awr_weight, a.gate_episodes, a.seed, not a.no_d3rlpy)  # fmt: skip
    reporting.print_table("learning", ("metric", "ours", "anchor", "anchor_value", "ratio", "task"))


if __name__ == "__main__":
    main()
