"""Quality on a standard env: Hopper-v5 offline, our BC and multi-step vs d3rlpy IQL and TD3+BC.

    python -m benchmarks.learning_hopper [--quick] [--sb3-steps 200000] [--transitions 100000]
        [--steps 10000] [--episodes 10] [--out bench-out/learning]

A "medium"-style dataset made here, in the spirit of D4RL's hopper-medium (a policy stopped
well short of expert):
- behaviour: SB3 PPO (8 envs, VecNormalize, [64, 64] networks: minutes on one core; SAC's
  one update per env step is ~10x slower here), seeded, trained for `--sb3-steps` env steps
  and stopped there; its deterministic action plus Gaussian noise (std 0.1) collects
  `--transitions` steps of whole episodes into OUR corpus (Zarr, task `hopper`, obs `state`);
- ours: `train_offline` on that corpus, BC alone and multi-step (BC, IQL critic, gated PPO-clip
  generations), `--steps` gradient steps per stage. Falling ends a Hopper episode and is a
  failure, so the critic treats terminations as plain terminals (`absorbing_terminal=False`);
  Hopper reports no success, so the sim gate decides on return;
- peers: d3rlpy 2.8.1 IQL and TD3+BC on the same transitions (exported from the TrainingCache
  ours sees) for the same gradient steps, their policies run in the same env as TorchScript.
Every policy, and the SB3 behaviour policy itself (without noise), runs on the same
`--episodes` evaluation seeds. Score: D4RL's normalised return 100 * (R - R_random) /
(R_expert - R_random) with D4RL's v2 Hopper reference returns (random -20.272305, expert
3234.3), used only as a scale: the data is not D4RL's. Ratios compare normalised scores.
JSON lines on stdout, a table on stderr, a bar plot (PNG) in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym
import numpy as np
import torch

from benchmarks import peers, reporting
from benchmarks.learning_quality import TorchScriptPolicy
from flywheel.algorithms.iql import IQLConfig
from flywheel.corpus import Corpus, CorpusConfig, Filter, TrainingCache
from flywheel.evaluation import EvalResult, evaluate
from flywheel.policies import NumpyPolicy, load_bundle
from flywheel.rollout import EnvPool
from flywheel.training import OfflineConfig, train_offline
from sim.hopper import HopperV5

ENV_ID, TASK = "Hopper-v5", "hopper"
RANDOM_RETURN, EXPERT_RETURN = -20.272305, 3234.3  # D4RL v2 hopper refs (a scale only)
COLLECT_SEED, EVAL_SEED, NOISE = 10_000, 123, 0.1  # seed ranges apart (and from gate seeds)


def emit(metric: str, ours: float, anchor: str, anchor_value: float | None, **extra) -> None:
    reporting.emit("learning", metric, ours, anchor, anchor_value, digits=4, **extra)


def normalised(ret: float) -> float:
    """D4RL's normalised score: 0 = random policy, 100 = D4RL's expert."""
    return 100 * (ret - RANDOM_RETURN) / (EXPERT_RETURN - RANDOM_RETURN)


env_fn = HopperV5()
"""Gymnasium's Hopper-v5 when called; pools step it batched (bitwise the same episodes)."""


class Behaviour:
    """An SB3 model (with its observation normaliser) as a batched policy: deterministic
    action plus clipped Gaussian noise."""

    def __init__(self, model: Any, noise: float = 0.0, seed: int = 0) -> None:
        self.model, self.noise = model, noise
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        x = self.model.get_vec_normalize_env().normalize_obs(obs["state"])
        a = self.model.predict(x, deterministic=True)[0]
        if self.noise > 0:
            a = a + self.noise * self.rng.standard_normal(a.shape)
        return np.clip(a, -1.0, 1.0).astype(np.float32)


def train_behaviour(steps: int) -> Any:
    """SB3 PPO on Hopper (8 envs, normalised observations and rewards), stopped early: a
    'medium' policy, not an expert (this seed passes ~1,400 return near 200k steps)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    vec = VecNormalize(make_vec_env(ENV_ID, n_envs=8, seed=0), gamma=0.99)
    model = PPO("MlpPolicy", vec, n_steps=256, batch_size=256, n_epochs=10, learning_rate=3e-4,
                gae_lambda=0.95, device="cpu", seed=0, verbose=0)  # fmt: skip
    model.learn(total_timesteps=steps)
    vec.close()
    return model


def collect(policy: Behaviour, transitions: int, corpus: Corpus) -> dict[str, Any]:
    """Whole episodes from `policy` into the corpus until they hold `transitions` steps."""
    pool = EnvPool([env_fn] * 4, seed=COLLECT_SEED)
    hz = 1.0 / env_fn.batched(1).dt
    steps, returns = 0, []
    try:
        while steps < transitions:
            *_, finished = pool.step(policy(pool.batch()))
            for rec in finished:
                if steps >= transitions:
                    break
                ep = rec.to_episode(task=TASK, robot="hopper", control_hz=hz, source="sim",
                                    policy_version="sb3-ppo-medium")  # fmt: skip
                corpus.append(ep)
                steps += rec.length
                returns.append(rec.ret)
    finally:
        pool.close()
    return {"episodes": len(returns), "transitions": steps, "mean_return": float(np.mean(returns))}


def evaluation(policy: Any, episodes: int) -> EvalResult:
    return evaluate(policy, env_fn, episodes=episodes, seed=EVAL_SEED)


def offline(corpus: Corpus, steps: int, quick: bool, tmp: Path) -> dict[str, Any]:
    """Our BC and multi-step, then d3rlpy IQL / TD3+BC, on one corpus; the policies and times."""
    base = OfflineConfig(task=TASK, bc_steps=steps, iql_steps=steps, failure_weight=1.0,
                         iql=IQLConfig(absorbing_terminal=False))  # fmt: skip
    # 100 gate episodes, as in its recorded figures: Hopper's episodes run to 1,000 steps, so the
    # default 600 would be up to 600k env steps (minutes) per decision
    ms_cfg = replace(base.multistep, steps=steps, gate_every=max(steps // 5, 1), sim_episodes=100)
    if quick:
        ms_cfg = replace(ms_cfg, sim_episodes=3)
        base = replace(base, dynamics=replace(base.dynamics, steps=300))
    base = replace(base, multistep=ms_cfg)
    out: dict[str, Any] = {"seconds": {}}
    t = time.perf_counter()
    bc = train_offline(corpus, replace(base, algo="bc"), home=tmp / "home")
    out["seconds"]["ours_bc"] = time.perf_counter() - t
    t = time.perf_counter()
    ms = train_offline(corpus, base, home=tmp / "home", env_fn=env_fn)
    out["seconds"]["ours_multistep"] = time.perf_counter() - t
    out["bc"] = NumpyPolicy(load_bundle(bc["bundle"]).actor)
    out["multistep"] = NumpyPolicy(load_bundle(ms["bundle"]).actor)
    out["generations"] = ms["metrics"]["generations"]
    if peers.available():
        cache = TrainingCache.build(corpus, corpus.snapshot(Filter(task=TASK)))  # what ours sees
        npz = peers.to_d3rlpy_npz(cache, tmp / "hopper.npz")
        for algo in ("iql", "td3bc"):
            pt = tmp / f"hopper-{algo}.pt"
            got = peers.run_peer("d3rlpy_train.py", npz, algo, steps, pt, timeout=3600)
            if got is not None:
                out[f"d3rlpy_{algo}"] = TorchScriptPolicy(pt)
                out["seconds"][f"d3rlpy_{algo}"] = got["seconds"]
    return out


LABELS = {
    "behaviour": "SB3 PPO (behaviour)",
    "bc": "ours BC",
    "multistep": "ours multi-step",
    "d3rlpy_iql": "d3rlpy IQL",
    "d3rlpy_td3bc": "d3rlpy TD3+BC",
}


def plot(scores: dict[str, list[float]], dataset: float, out: Path) -> Path:
    """Bars of mean normalised return (error bar: std over evaluation episodes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    names = list(scores)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(names)), [np.mean(scores[n]) for n in names],
           yerr=[np.std(scores[n]) for n in names], color=[f"C{i}" for i in range(len(names))], capsize=3)  # fmt: skip
    ax.axhline(dataset, color="k", ls="--", lw=1, label="dataset episodes (noisy behaviour)")
    ax.set_xticks(range(len(names)), [LABELS[n] for n in names], rotation=15, fontsize=8)
    ax.set(ylabel="D4RL-normalised return", title=f"{ENV_ID}, offline from a medium-style dataset")
    ax.legend(fontsize=7)
    path = out / "hopper_normalised_return.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(sb3_steps: int, transitions: int, steps: int, episodes: int, quick: bool, out: Path, tmp: Path) -> None:  # fmt: skip
    import mujoco
    import stable_baselines3

    torch.set_num_threads(1)
    start = time.perf_counter()
    print(json.dumps({"bench": "learning", "metric": "versions", "env": ENV_ID, "torch": torch.__version__,
                      "gymnasium": gym.__version__, "mujoco": mujoco.__version__, "sb3": stable_baselines3.__version__,
                      "d3rlpy": "2.8.1" if peers.available() else None, "threads": 1, "quick": quick}), flush=True)  # fmt: skip
    t = time.perf_counter()
    model = train_behaviour(sb3_steps)
    sb3_s = time.perf_counter() - t
    corpus = Corpus.create(tmp / "hopper.zarr", config=CorpusConfig(durable=False))
    data = collect(Behaviour(model, NOISE, seed=COLLECT_SEED), transitions, corpus)
    data_score = normalised(data["mean_return"])
    emit("hopper_dataset_normalised_return", data_score, None, None, env=ENV_ID, behaviour="sb3-2.9.2-ppo",
         sb3_steps=sb3_steps, noise=NOISE, sb3_seconds=round(sb3_s), **data)  # fmt: skip
    r = offline(corpus, steps, quick, tmp)
    policies = {"behaviour": Behaviour(model), **{k: r[k] for k in LABELS if k in r}}
    results = {k: evaluation(p, episodes) for k, p in policies.items()}
    scores = {k: [normalised(x) for x in v.returns] for k, v in results.items()}
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    ret = {k: round(v.mean_return, 1) for k, v in results.items()}
    common = {"env": ENV_ID, "steps": steps, "transitions": data["transitions"], "episodes": episodes,
              "eval_seed": EVAL_SEED}  # fmt: skip
    gens = r["generations"]
    accepted = sum(bool(g["accepted"]) for g in gens)
    ms_extra = {"return": ret["multistep"], "accepted_generations": f"{accepted}/{len(gens) - 1}"}
    for algo in ("iql", "td3bc"):
        key = f"d3rlpy_{algo}"
        if key in mean:
            emit("hopper_normalised_return_multistep_vs_d3rlpy", mean["multistep"], f"d3rlpy-2.8.1-{algo}", mean[key],
                 anchor_return=ret[key], anchor_seconds=round(r["seconds"][key]), **ms_extra, **common)  # fmt: skip
    emit("hopper_normalised_return_multistep_vs_bc", mean["multistep"], "our-bc", mean["bc"],
         anchor_return=ret["bc"], **ms_extra, **common)  # fmt: skip
    emit("hopper_normalised_return_multistep_vs_behaviour", mean["multistep"], "sb3-2.9.2-ppo-behaviour", mean["behaviour"],
         anchor_return=ret["behaviour"], **ms_extra, **common)  # fmt: skip
    secs = {k: round(v) for k, v in r["seconds"].items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "hopper.json").write_text(json.dumps({"normalised": scores, "returns": {k: v.returns for k, v in results.items()},
                                                 "dataset": data, "generations": gens, "seconds": secs}, indent=1))  # fmt: skip
    path = plot(scores, data_score, out)
    print(json.dumps({"bench": "learning", "metric": "plot", "path": str(path)}), flush=True)
    print(json.dumps({"bench": "learning", "metric": "hopper_wall_seconds", "seconds": round(time.perf_counter() - start),
                      "train_seconds": secs, "sb3_seconds": round(sb3_s)}), flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="20k PPO steps, 10k transitions, 500 steps per stage, 3 episodes")  # fmt: skip
    ap.add_argument("--sb3-steps", type=int, default=200_000, help="env steps of the SB3 PPO behaviour policy")  # fmt: skip
    ap.add_argument("--transitions", type=int, default=100_000, help="dataset size (whole episodes)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=10_000, help="gradient steps per offline stage")
    ap.add_argument("--episodes", type=int, default=10, help="evaluation episodes per policy")
    ap.add_argument("--out", type=Path, default=Path("bench-out/learning"))
    a = ap.parse_args()
    if a.quick:
        a.sb3_steps, a.transitions, a.steps, a.episodes = 20_480, 10_000, 500, 3
    with tempfile.TemporaryDirectory(prefix="fw-hopper-") as d:
        run(a.sb3_steps, a.transitions, a.steps, a.episodes, a.quick, a.out, Path(d))
    reporting.print_table("learning", ("metric", "ours", "anchor", "anchor_value", "ratio", "return", "anchor_return"))  # fmt: skip


if __name__ == "__main__":
    main()
