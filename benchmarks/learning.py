"""Learning benchmark: update speed vs d3rlpy, online PPO speed vs Stable-Baselines3, quality.

    python -m benchmarks.learning [--quick] [--only offline_speed,online_speed,quality]

Side by side in one run, same data, [256, 256] networks, batch 256, one thread:
- offline_speed: seconds per 1k gradient steps of our BC, IQL critic + multi-step policy update
  (the IQL-based update), vs d3rlpy 2.8.1 BC / IQL / TD3+BC (subprocess in ./.venv-peers, see
  scripts/bench_env.sh). Floor: ours <= 0.5x d3rlpy's IQL.
- online_speed: our PPO env steps/s including updates vs SB3 2.9.2 PPO with the same rollout,
  epochs, minibatch and networks, on Hopper-v5 and on our `lift`. Floor: 2x SB3.
- quality: from noisy expert demos of a sim task, success of BC, of multi-step offline, and of
  online refinement, on the same evaluation seeds (our algorithms; peers: see docs/benchmarks.md).
JSON lines on stdout, tables on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
import torch

from benchmarks import peers, reporting
from flywheel.algorithms.base import OfflineSource
from flywheel.algorithms.bc import BC
from flywheel.algorithms.iql import IQLConfig, IQLCritic
from flywheel.algorithms.multistep import MultiStepImprover
from flywheel.algorithms.ppo import PPOConfig
from flywheel.corpus import Corpus, CorpusConfig, Filter, TrainingCache
from flywheel.online import RefineConfig, cores, refine
from flywheel.policies import (
    GaussianActor,
    Normalizer,
    PolicySpec,
    ValueNet,
    load_bundle,
    save_bundle,
)
from flywheel.runtime import Runtime


def emit(metric: str, ours: float, anchor: str, anchor_value: float | None, **extra) -> None:
    reporting.emit("learning", metric, ours, anchor, anchor_value, digits=5, **extra)


def lift_corpus(tmp: Path, episodes: int, noise: float | None = None) -> Corpus:
    import sim
    from sim.collect import collect

    path = tmp / "lift.zarr"
    collect(
        "lift",
        episodes,
        noise=sim.DEFAULT_NOISE if noise is None else noise,
        seed=0,
        corpus_path=path,
    )
    return Corpus(path, CorpusConfig(durable=False))


def _time(fn, steps: int) -> float:
    for _ in range(20):
        fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps * 1000


def offline_speed(quick: bool, tmp: Path) -> None:
    torch.set_num_threads(1)
    steps, reps = (300, 2) if quick else (1000, 3)
    corpus = lift_corpus(tmp, 60 if quick else 200)
    cache = TrainingCache.build(corpus, corpus.snapshot(Filter(task="lift")))
    spec = PolicySpec(obs_shapes={k: v.shape[1:] for k, v in cache.obs.items()}, action_dim=cache.action.shape[1], hidden=(256, 256))  # fmt: skip
    norm = Normalizer.from_stats(spec.obs_shapes, cache.stats)
    src = OfflineSource(cache, seed=0)

    def ours(compile: bool):  # same networks as d3rlpy's: plain [256, 256] MLPs, no LayerNorm
        bc = BC(spec, norm, compile=compile)
        iql = IQLCritic(spec, norm, IQLConfig(layer_norm=False), compile=compile)
        imp = MultiStepImprover(GaussianActor(spec, norm), iql, rows=src, compile=compile)

        def iql_based():
            """What one step of the retrain costs: critic + policy improvement. The improver's
            per-row tables are paid for in the timing: the critic's once per timed block of
            `steps` (the retrain: once per run), pi_old's every `gate_every` steps (the
            retrain's most: every generation accepted)."""
            iql.update(src.sample(256))
            imp.update(src.sample(256))
            n = imp.step.steps  # updates so far, this one included
            if n % steps == 0:
                imp.reevaluate()
            elif n % imp.config.gate_every == 0:
                imp.accept()

        t = time.perf_counter()
        bc.update(src.sample(256))
        iql_based()
        return (lambda: bc.update(src.sample(256))), iql_based, time.perf_counter() - t

    npz = peers.to_d3rlpy_npz(cache, tmp / "offline.npz")
    fns = {mode: ours(mode == "compiled") for mode in ("eager", "compiled")}
    mine = {f"{m}_{a}": [] for m in fns for a in ("bc", "iql")}
    peer = {"bc": [], "iql": [], "td3bc": []}
    for _ in range(reps):
        for mode, (bc_step, iql_step, _) in fns.items():
            mine[f"{mode}_bc"].append(_time(bc_step, steps))
            mine[f"{mode}_iql"].append(_time(iql_step, steps))
        if peers.available():
            for algo in peer:
                got = peers.run_peer("d3rlpy_updates.py", npz, algo, steps)
                if got is not None:
                    peer[algo].append(got["sec_per_1k_steps"])
    med = statistics.median
    p = {k: med(v) if v else None for k, v in peer.items()}
    info = {"batch": 256, "hidden": [256, 256], "transitions": cache.num_steps, "threads": 1}

    def paired(ours: list[float], theirs: list[float]) -> dict[str, float]:
        """Median of the per-repeat ratios: each pair ran minutes apart at most, while the
        machine's speed drifts by tens of percent over a run."""
        if len(ours) != len(theirs) or not theirs:
            return {}
        return {
            "ratio_paired_median": round(med([a / b for a, b in zip(ours, theirs, strict=True)]), 4)
        }

    for mode, (_, _, compile_s) in fns.items():
        extra = {**info, "mode": mode, "compile_s": round(compile_s, 1)}
        bc, iql = mine[f"{mode}_bc"], mine[f"{mode}_iql"]
        emit("sec_per_1k_steps_bc", med(bc), "d3rlpy-2.8.1-bc", p["bc"], **paired(bc, peer["bc"]), **extra)  # fmt: skip
        emit("sec_per_1k_steps_iql_critic_plus_policy", med(iql), "d3rlpy-2.8.1-iql", p["iql"],
             floor_ratio_max=0.5, **paired(iql, peer["iql"]), **extra)  # fmt: skip
        emit("sec_per_1k_steps_iql_critic_plus_policy", med(iql), "d3rlpy-2.8.1-td3bc", p["td3bc"], **paired(iql, peer["td3bc"]), **extra)  # fmt: skip
    if not peers.available():
        print("d3rlpy skipped: run `bash scripts/bench_env.sh`", file=sys.stderr)


def _fresh_bundle(env: gym.Env, path: Path) -> Path:
    """An untrained actor/value for an env (identity normaliser), to time PPO from scratch."""
    space = env.observation_space
    shapes = (
        {k: s.shape for k, s in space.spaces.items()}
        if isinstance(space, gym.spaces.Dict)
        else {"state": space.shape}
    )
    spec = PolicySpec(obs_shapes=shapes, action_dim=env.action_space.shape[0], hidden=(256, 256))
    norm = Normalizer(spec.obs_shapes)
    return save_bundle(
        path,
        GaussianActor(spec, norm, init_log_std=0.0),
        task="bench",
        control_hz=20.0,
        lineage={},
        value=ValueNet(spec, norm),
    )


def online_speed(quick: bool, tmp: Path) -> None:
    """Our PPO (envs in one worker process per core, as `refine` runs long budgets) vs SB3 PPO
    with its default in-process DummyVecEnv and with SubprocVecEnv (its multi-process option).

    On Hopper ours steps `sim.hopper.HopperV5`, the same MDP as Gymnasium's Hopper-v5 written
    batched (what `flywheel refine --env Hopper-v5` uses), and SB3 steps Gymnasium's env, as
    its users do; ours on Gymnasium's envs (`eager_gymnasium`) and SB3 on ours (`sb3_batched`,
    through a VecEnv adapter) are timed too, so the learner and the env's share are both seen.

    The runs alternate, `reps` times per env, and the figures are medians: this machine's
    speed drifts by tens of percent from minute to minute, so back-to-back blocks of one
    learner and then the other would measure the drift. `ratio_median` is the median of the
    per-repeat ratios (each pair ran a minute apart at most). Ours runs eager (the default)
    and compiled (`Runtime.compile`: each update one graph); each `mode` is compared with both.
    """
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    import sim
    from benchmarks.peers.sb3_vec import BatchedVecEnv
    from sim.hopper import HopperV5

    torch.set_num_threads(1)
    steps, reps = (8192, 3) if quick else (40_960, 3)
    n_envs, rollout, epochs, mb = 8, 256, 5, 256
    workers = cores() - 1  # beside the learner, which steps a share too
    gym_hopper = lambda: gym.make("Hopper-v5")  # noqa: E731
    lift = lambda: gym.make(sim.GYM_IDS["lift"])  # noqa: E731
    ours_env = {"Hopper-v5": HopperV5(), "lift": lift}
    sb3_env = {"Hopper-v5": gym_hopper, "lift": lift}
    ppo = PPOConfig(num_envs=n_envs, rollout_steps=rollout, epochs=epochs, minibatch=mb, critic_warmup=0)  # fmt: skip
    cfg = RefineConfig(algo="ppo", env_steps=steps, eval_episodes=1, check_every=10**9, check_episodes=1,
                       env_workers=workers, ppo=ppo)  # fmt: skip
    compiled = replace(cfg, runtime=Runtime(compile=True))
    for name, fn in ours_env.items():
        modes = {"eager": (cfg, fn), "compiled": (compiled, fn)}
        # SB3's vector env for each anchor, and the env factory it steps
        single = {"dummy": None, "subproc": SubprocVecEnv}
        sb3_kinds = {k: (partial(make_vec_env, sb3_env[name], n_envs=n_envs, seed=0, vec_env_cls=cls), sb3_env[name]) for k, cls in single.items()}  # fmt: skip
        if name == "Hopper-v5":
            modes["eager_gymnasium"] = (cfg, gym_hopper)
            sb3_kinds["sb3_batched"] = (lambda f=fn: BatchedVecEnv(f.batched(n_envs), seed=0), fn)
        bundle = load_bundle(_fresh_bundle(sb3_env[name](), tmp / f"fresh-{name}"))
        policy = "MultiInputPolicy" if name == "lift" else "MlpPolicy"
        runs: dict[str, list[tuple[float, float]]] = {m: [] for m in (*modes, *sb3_kinds)}
        for rep in range(reps):
            for mode, (mode_cfg, env_fn) in modes.items():
                marks: list[tuple[float, int]] = []
                out = refine(bundle, env_fn, mode_cfg, out=tmp / f"ppo-{name}-{mode}-{rep}", progress=lambda d, t, m=marks: m.append((time.perf_counter(), d)))  # fmt: skip
                runs[mode].append((out["env_steps_per_s"], _steady(marks)))
            for kind, (make_vec, _) in sb3_kinds.items():
                vec = make_vec()
                model = SB3PPO(policy, vec, n_steps=rollout, batch_size=mb, n_epochs=epochs, device="cpu", seed=0,
                               policy_kwargs={"net_arch": [256, 256]}, verbose=0)  # fmt: skip
                marks = []
                t = time.perf_counter()
                model.learn(total_timesteps=steps, callback=_Marks(marks))
                runs[kind].append((steps / (time.perf_counter() - t), _steady(marks)))
                vec.close()
        med = statistics.median
        extra = {"env": name, "env_steps": steps, "num_envs": n_envs, "env_workers": workers, "repeats": reps}  # fmt: skip
        # which env each side stepped: "batched" (one HopperBatch per share) or "single" envs
        env_of = lambda f: "batched" if hasattr(f, "batched") else "single"  # noqa: E731
        for mode, kind in ((m, k) for m in modes for k in sb3_kinds):
            if mode == "eager_gymnasium" and kind == "sb3_batched":
                continue  # ours on the slower env against SB3 on the faster: answers nothing
            ours = runs[mode]
            sides = {"ours_env": env_of(modes[mode][1]), "anchor_env": env_of(sb3_kinds[kind][1])}
            for col, metric in (
                (1, "ppo_env_steps_per_s_steady"),
                (0, "ppo_env_steps_per_s_incl_startup"),
            ):
                ratios = [o[col] / a[col] for o, a in zip(ours, runs[kind], strict=True)]
                floor = {"floor_ratio_min": 2.0} if col == 1 else {}
                each = {"ours_each": [round(o[col]) for o in ours], "anchor_each": [round(a[col]) for a in runs[kind]]}  # fmt: skip
                anchor = f"sb3-2.9.2-ppo-{kind}vecenv" if kind != "sb3_batched" else "sb3-2.9.2-ppo-on-our-batched-env"  # fmt: skip
                emit(metric, med(o[col] for o in ours), anchor, med(a[col] for a in runs[kind]),
                     ratio_median=round(med(ratios), 3), mode=mode, **sides, **floor, **extra, **each)  # fmt: skip


def _steady(marks: list[tuple[float, int]]) -> float:
    """Env steps/s between the first and the last rollout end: the rate of a long run, without
    one-time costs (worker start, compilation, the first evaluation)."""
    (t0, s0), (t1, s1) = marks[0], marks[-1]
    return (s1 - s0) / (t1 - t0)


class _Marks:
    """SB3 callback recording (time, env steps) at each rollout end, like our progress hook."""

    def __new__(cls, marks: list[tuple[float, int]]):
        from stable_baselines3.common.callbacks import BaseCallback

        class Marks(BaseCallback):
            def _on_step(self) -> bool:
                return True

            def _on_rollout_end(self) -> None:
                marks.append((time.perf_counter(), self.num_timesteps))

        return Marks()


def quality(quick: bool, tmp: Path) -> None:
    """See benchmarks/learning_quality.py (also runnable on its own, with more options)."""
    from benchmarks import learning_quality as q

    if quick:
        q.run(["lift"], 1000, 20_000, 5_000, Path("bench-out/learning"), tmp, ["sac", "ppo"], sb3=True)  # fmt: skip
    else:
        q.run(["push", "lift", "pick_place", "drawer"], 5000, 300_000, 30_000, Path("bench-out/learning"), tmp, ["sac", "ppo"], sb3=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="offline_speed,online_speed,quality")
    args = ap.parse_args()
    import stable_baselines3

    print(json.dumps({"bench": "learning", "metric": "versions", "torch": torch.__version__, "numpy": np.__version__,
                      "gymnasium": gym.__version__, "sb3": stable_baselines3.__version__, "python": platform.python_version(),
                      "threads": 1, "quick": args.quick}), flush=True)  # fmt: skip
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="fw-learn-") as d:
        tmp = Path(d)
        for name, fn in (
            ("offline_speed", offline_speed),
            ("online_speed", online_speed),
            ("quality", quality),
        ):
            if name in only:
                fn(args.quick, tmp)
    reporting.print_table(
        "learning",
        ("metric", "ours", "anchor", "anchor_value", "ratio", "ratio_median", "env", "task"),
    )


if __name__ == "__main__":
    main()
