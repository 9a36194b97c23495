"""collect -> train bc -> multistep -> refine -> eval on one sim task, and targeted refinement."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

sim = pytest.importorskip("sim")

from flywheel.algorithms.multistep import MultiStepConfig  # noqa: E402
from flywheel.algorithms.sac import SACConfig  # noqa: E402
from flywheel.corpus import Corpus, Filter  # noqa: E402
from flywheel.evaluation import evaluate  # noqa: E402
from flywheel.online import RefineConfig, refine  # noqa: E402
from flywheel.ope import DynamicsConfig  # noqa: E402
from flywheel.policies import NumpyPolicy, load_bundle  # noqa: E402
from flywheel.targeted import Target, TargetedConfig, chunk_size, refine_targets  # noqa: E402
from flywheel.training import OfflineConfig, train_offline  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _env():
    return gym.make(sim.GYM_IDS["reach"])


def test_tiny_flywheel_on_reach(tmp_path):
    from sim.collect import collect

    path = tmp_path / "corpus.zarr"
    got = collect("reach", 24, noise=0.5, seed=0, corpus_path=path)
    assert got["episodes"] == 24
    corpus = Corpus(path)
    small = dict(bc_steps=300, iql_steps=300, hidden=(64, 64), checkpoint_every=1000)
    ms = MultiStepConfig(steps=200, gate_every=100, sim_episodes=5, ope_states=128)
    bc = train_offline(corpus, OfflineConfig(task="reach", algo="bc", **small), home=tmp_path)
    multi = train_offline(
        corpus,
        OfflineConfig(task="reach", multistep=ms, dynamics=DynamicsConfig(steps=100), **small),
        home=tmp_path,
        env_fn=_env,
    )
    gens = multi["metrics"]["generations"]
    assert len(gens) == 3 and gens[0]["sim_accepted"] is not None
    cfg = RefineConfig(
        env_steps=1024, eval_episodes=8, sac=SACConfig(warmup_steps=512, batch_size=64)
    )  # the default: SAC
    out = refine(load_bundle(multi["bundle"]), _env, cfg, out=tmp_path / "refined", corpus=corpus)
    assert 0.0 <= out["success_before"] <= 1.0 and 0.0 <= out["success_after"] <= 1.0
    online = corpus.entries(Filter(source="online"))
    assert len(online) == out["online_episodes"] > 0
    assert all(e.policy_version == "online:" + Path(multi["bundle"]).name for e in online)
    refined = load_bundle(out["bundle"])
    assert refined.lineage["parent"] == multi["bundle"] and refined.lineage["algorithm"] == "sac"
    r = evaluate(NumpyPolicy(load_bundle(bc["bundle"]).actor), _env, episodes=8, seed=7)
    assert r.episodes == 8 and r.success_rate > 0.0  # reach is easy: BC succeeds sometimes
    cli = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "eval", out["bundle"], "--task", "reach", "--episodes", "4", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert set(json.loads(cli.stdout)) >= {"success_rate", "mean_return", "episodes"}


def test_targeted_refinement_works_weakest_first_and_retires_passed_targets(tmp_path, monkeypatch):
    succ = {"a": 0.2, "b": 0.5, "c": 0.95}
    calls = []

    def chunk(t: Target, steps: int) -> Path:
        calls.append((t.name, steps))
        succ[t.task] = min(1.0, succ[t.task] + 0.4)  # each round helps
        return t.bundle

    targets = [Target(task=k, bundle=tmp_path, env_fn=_env, success=v) for k, v in succ.items()]
    import flywheel.targeted as tg

    monkeypatch.setattr(tg, "measure", lambda t, cfg: succ[t.task])  # rollouts are tested above
    out = refine_targets(targets, TargetedConfig(budget=50_000, chunk=10_000, threshold=0.9), chunk)
    assert out["order"] == ["a", "b", "a"]  # weakest first; c never (already passing)
    assert out["env_steps"] == 30_000 and all(v["passed"] for v in out["targets"].values())
    assert out["targets"]["c"]["env_steps"] == 0


def test_chunks_share_the_budget_but_never_go_below_the_floor():
    assert chunk_size(120_000, 2, 40_000) == 60_000  # enough for both: shared
    assert chunk_size(40_000, 2, 40_000) == 40_000  # not enough: the weakest gets all of it
    assert chunk_size(40_000, 4, 10_000) == 10_000
    assert chunk_size(1024, 1, 40_000) == 1024  # never more than the budget
    assert chunk_size(1024, 0, 40_000) == 1024
    assert chunk_size(0, 2, 40_000) == 0  # --online-steps 0: no refinement
    with pytest.raises(ValueError, match="online budget"):
        chunk_size(-1, 1, 40_000)
    with pytest.raises(ValueError, match="chunk floor"):
        chunk_size(40_000, 1, 0)


def test_an_image_policy_goes_round_the_loop_in_the_sim(tmp_path):
    """Train multi-step with a camera (gate rollouts render it; OPE scores at dataset frames, as
    the dynamics model predicts no frames), refine online, evaluate: each env renders what the
    policy was trained on."""
    from flywheel.cli.learn import env_factory
    from sim.collect import collect

    path = tmp_path / "corpus.zarr"
    collect("reach", 6, noise=0.5, seed=0, cameras=("front",), image_size=32, corpus_path=path)
    corpus = Corpus(path)
    ms = MultiStepConfig(steps=40, gate_every=20, sim_episodes=2, ope_states=16)
    cfg = OfflineConfig(task="reach", bc_steps=40, iql_steps=40, hidden=(32, 32), cameras=("front",), multistep=ms)  # fmt: skip
    env_fn = env_factory("reach", cameras={"front": (32, 32, 3)})
    multi = train_offline(corpus, cfg, home=tmp_path, env_fn=env_fn)
    gens = multi["metrics"]["generations"]
    assert len(gens) == 3 and all(g["ope_candidate"] is not None for g in gens[1:])
    assert gens[0]["sim_accepted"] is not None
    bundle = load_bundle(multi["bundle"])
    assert bundle.spec.cameras == {"front": (32, 32, 3)}
    env_fn = env_factory("reach", cameras=bundle.spec.cameras)
    rcfg = RefineConfig(env_steps=256, eval_episodes=2, check_episodes=2, confirm_episodes=2, sac=SACConfig(warmup_steps=128, batch_size=16))  # fmt: skip
    out = refine(bundle, env_fn, rcfg, out=tmp_path / "refined", corpus=corpus)
    assert out["online_episodes"] > 0
    online = corpus.entries(Filter(source="online"))
    assert online and all("images/front" in e.meta["features"] for e in online)
    assert evaluate(NumpyPolicy(load_bundle(out["bundle"]).actor), env_fn, episodes=2, seed=0).episodes == 2  # fmt: skip


def test_after_an_acceptance_the_gate_rolls_out_pi_old_on_fresh_seeds(tmp_path, monkeypatch):
    """The accepted candidate won on its block of seeds; later decisions use the next block,
    with pi_old rolled out there afresh (its OPE is kept: the critic has no seed luck)."""
    import flywheel.training as training
    from sim.collect import collect

    collect("reach", 8, noise=0.5, seed=0, corpus_path=tmp_path / "c.zarr")
    real = training.decide

    def accept_generation_1(d, *args):
        d = real(d, *args)
        d.accepted = d.accepted or d.generation == 1  # constructed: whatever the rollouts said
        return d

    monkeypatch.setattr(training, "decide", accept_generation_1)
    actors = {}
    n = 4
    ms = MultiStepConfig(steps=60, gate_every=20, sim_episodes=n, ope_states=16)
    cfg = OfflineConfig(task="reach", bc_steps=40, iql_steps=40, hidden=(32, 32), multistep=ms, dynamics=DynamicsConfig(steps=20))  # fmt: skip
    out = train_offline(Corpus(tmp_path / "c.zarr"), cfg, home=tmp_path, env_fn=_env,
                        observe=lambda r, a: actors.setdefault(r["generation"], NumpyPolicy(copy.deepcopy(a).cpu())))  # fmt: skip
    gens = out["metrics"]["generations"]
    assert gens[1]["accepted"]
    seeds = [g["sim_seed"] for g in gens]
    assert seeds == [training.GATE_SEED] * 2 + [training.GATE_SEED + n] * 2
    fresh = evaluate(actors[1], _env, episodes=n, seed=training.GATE_SEED + n)
    assert gens[2]["sim_accepted"] == pytest.approx(fresh.success_rate)
    assert gens[2]["sim_return_accepted"] == pytest.approx(fresh.mean_return)
    assert gens[2]["ope_accepted"] == gens[1]["ope_candidate"]
