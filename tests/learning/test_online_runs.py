"""Online refinement: killed runs resume from their checkpoint; env worker processes step the
same episodes as in-process envs."""

from __future__ import annotations

import copy
import functools
import os
import signal
import subprocess
import sys

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch

sim = pytest.importorskip("sim")

from flywheel.algorithms.ppo import PPOConfig  # noqa: E402
from flywheel.algorithms.sac import SACConfig  # noqa: E402
from flywheel.corpus import Corpus, Filter  # noqa: E402
from flywheel.online import RefineConfig, Resumable, refine  # noqa: E402
from flywheel.policies import (  # noqa: E402  # fmt: skip
    GaussianActor,
    Normalizer,
    PolicySpec,
    ValueNet,
    load_bundle,
    save_bundle,
)
from flywheel.policies.numpy_forward import Behaviour  # noqa: E402
from flywheel.rollout import EnvPool, Segment  # noqa: E402
from flywheel.workers import SEED_STRIDE, ProcessEnvPool  # noqa: E402


def _env():
    return gym.make(sim.GYM_IDS["reach"])


def _modules():
    space = _env().observation_space
    spec = PolicySpec(obs_shapes={k: s.shape for k, s in space.spaces.items()}, action_dim=4, hidden=(32, 32))  # fmt: skip
    norm = Normalizer(spec.obs_shapes)
    return GaussianActor(spec, norm), ValueNet(spec, norm)


def _bundle(tmp_path):
    actor, value = _modules()
    path = save_bundle(tmp_path / "start", actor, task="reach", control_hz=20.0, lineage={}, value=value)  # fmt: skip
    return load_bundle(path)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_killed_refinement_resumes_from_its_checkpoint(tmp_path, algo):
    corpus = Corpus.open_or_create(tmp_path / "c.zarr")
    bundle = _bundle(tmp_path)
    cfg = RefineConfig(
        algo=algo,
        env_steps=2048 if algo == "ppo" else 10_240,
        eval_episodes=2,
        check_episodes=2,
        confirm_episodes=2,
        checkpoint_every=1,
        env_workers=0,
        ppo=PPOConfig(num_envs=4, rollout_steps=64, epochs=1, critic_warmup=0),
        sac=SACConfig(num_envs=4, warmup_steps=10_000, batch_size=32),
    )
    out = tmp_path / "refined"
    kill_after = 1024 if algo == "ppo" else 6000

    def progress(done, total):
        if done >= kill_after:
            raise _Killed  # a checkpoint was written before this point

    with pytest.raises(_Killed):
        refine(bundle, _env, cfg, out=out, corpus=corpus, progress=progress)
    ckpt = Resumable(out, cfg, bundle)
    assert ckpt.load() is not None and not out.exists()
    before = len(corpus.entries(Filter(source="online")))
    res = refine(bundle, _env, cfg, out=out, corpus=corpus)
    assert 0 < res["metrics"]["resumed_at"] < cfg.env_steps
    assert not ckpt.path.exists() and load_bundle(res["bundle"]).lineage["resumed_at_env_steps"]
    # only whole episodes reach the corpus, before and after the kill
    online = corpus.entries(Filter(source="online"))
    assert len(online) > before and all(e.length > 0 for e in online)


def test_a_different_run_ignores_a_foreign_checkpoint(tmp_path):
    bundle = _bundle(tmp_path)
    a = Resumable(tmp_path / "out", RefineConfig(seed=0), bundle)
    a.save({"steps": 5})
    assert Resumable(tmp_path / "out", RefineConfig(seed=1), bundle).load() is None
    assert a.load()["steps"] == 5


def test_worker_processes_step_the_same_episodes_as_in_process_envs():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(120, 3, 4)).astype(np.float32)
    pools = [EnvPool([_env] * 3, seed=7), ProcessEnvPool([_env] * 3, workers=1, seed=7)]
    try:
        for a in actions:
            (o1, r1, _, _, f1, d1), (o2, r2, _, _, f2, d2) = (p.step(a) for p in pools)
            for k in o1:
                np.testing.assert_array_equal(o1[k], o2[k])
            np.testing.assert_array_equal(r1, r2)
            assert sorted(f1) == sorted(f2) and [e.seed for e in d1] == [e.seed for e in d2]
    finally:
        for p in pools:
            p.close()


def test_a_segment_is_the_same_rollout_wherever_its_envs_step():
    """Each worker acts for its own share with a copy of the snapshot: the rollout equals the
    in-process pools' segments of the same shares, side by side."""
    behaviour = Behaviour.of(*_modules())
    noise = np.random.default_rng(0).standard_normal((60, 4, 4)).astype(np.float32)
    pool = ProcessEnvPool([_env] * 4, workers=1, local_share=True, seed=7)
    shares = [EnvPool([_env] * 2, seed=7), EnvPool([_env] * 2, seed=7 + SEED_STRIDE)]
    try:
        got = pool.segment(behaviour, noise)
        want = Segment.concat([p.segment(behaviour, noise[:, 2 * i : 2 * i + 2]) for i, p in enumerate(shares)])  # fmt: skip
        assert (
            got.arrays["action"].shape == (60, 4, 4) and got.finished
        )  # reach episodes are 50 steps
        for k in ("action", "logp", "value", "reward", "done", "next_value"):
            np.testing.assert_array_equal(got.arrays[k], want.arrays[k])
        for k in got.arrays["obs"]:
            np.testing.assert_array_equal(got.arrays["obs"][k], want.arrays["obs"][k])
        assert [e.seed for e in got.finished] == [e.seed for e in want.finished]
        for k, v in pool.batch().items():  # the pool carries on from where the segment ended
            np.testing.assert_array_equal(v, np.concatenate([p.batch()[k] for p in shares]))
    finally:
        for p in [pool, *shares]:
            p.close()


def test_a_killed_worker_or_misshapen_noise_is_a_clear_error():
    behaviour = Behaviour.of(*_modules())
    pool = ProcessEnvPool([_env] * 4, workers=1, local_share=True, seed=0)
    try:
        with pytest.raises(ValueError, match=r"segment noise must be \(T, 4 envs, 4 action dims\)"):
            pool.segment(behaviour, np.zeros((5, 4, 3), np.float32))
        assert pool.segment(behaviour, np.zeros((5, 4, 4), np.float32)).arrays["action"].shape == (5, 4, 4)  # fmt: skip
        os.kill(pool._procs[0].pid, signal.SIGKILL)
        pool._procs[0].wait()
        with pytest.raises(RuntimeError, match="an env worker process died"):
            pool.segment(behaviour, np.zeros((5, 4, 4), np.float32))
    finally:
        pool.close()


def test_env_workers_act_without_importing_torch(tmp_path):
    """A worker stepping NumPy snapshots needs neither torch nor zarr, ~2 s of its start-up:
    unpickle a snapshot and run a segment in a fresh interpreter, as a worker does."""
    snap = tmp_path / "behaviour.pkl"
    env = functools.partial(gym.make, sim.GYM_IDS["reach"])  # `_env` would import this module
    snap.write_bytes(cloudpickle.dumps((Behaviour.of(*_modules()), env)))
    code = (
        "import sys, cloudpickle, numpy as np, sim\n"
        "import flywheel.workers\n"
        "from flywheel.rollout import EnvPool\n"
        f"behaviour, env = cloudpickle.loads(open({str(snap)!r}, 'rb').read())\n"
        "seg = EnvPool([env] * 2, seed=0).segment(behaviour, np.zeros((60, 2, 4), np.float32))\n"
        "assert seg.finished, 'reach episodes are 50 steps'\n"
        "print(sorted(m for m in ('torch', 'zarr') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_worker_that_fails_to_start_is_reported_when_the_pool_is_first_used():
    def broken():
        raise OSError("no such robot")

    pool = ProcessEnvPool([broken] * 2, workers=1, seed=0)  # returns without waiting
    with pytest.raises(RuntimeError, match="env worker failed: OSError: no such robot"):
        pool.batch()
    with pytest.raises(RuntimeError, match="the env pool is closed"):
        pool.batch()
    pool.close()


def test_closing_a_pool_before_its_first_use_does_not_wait_on_its_workers():
    """A worker says "ready" with its first observations before reading any command; when
    they fill the socket (camera frames), closing must read them or the worker never stops."""

    def big():
        return gym.wrappers.TransformObservation(_env(), lambda o: {**o, "frame": np.zeros((200, 200, 3), np.uint8)}, None)  # fmt: skip

    pool = ProcessEnvPool([big] * 4, workers=1, local_share=True, seed=0)
    procs = list(pool._procs)
    assert pool._conns[0].poll(60)  # the worker is up, its "ready" too big for the socket
    pool.close()
    assert [p.returncode for p in procs] == [0]  # it read "close" and stopped; not killed


def test_worker_pool_splits_envs_and_reports_finished_episodes_by_env_index():
    pool = ProcessEnvPool([_env] * 3, workers=2, seed=0)
    try:
        assert pool.batch()["ee_pos"].shape[0] == 3
        finished = []
        for _ in range(120):
            _, _, term, trunc, final, done = pool.step(np.zeros((3, 4), np.float32))
            assert set(final) == set(np.flatnonzero(term | trunc))
            finished += done
        assert finished and all(e.length > 0 for e in finished)
    finally:
        pool.close()


def test_the_best_checked_policy_must_beat_the_start_on_fresh_seeds(tmp_path, monkeypatch):
    """The winner of many noisy checks is over-stated; the final paired comparison catches it."""
    from flywheel import online

    bundle = _bundle(tmp_path)
    actor, value = (
        copy.deepcopy(bundle.actor),
        ValueNet(bundle.spec, bundle.actor.encoder.normalizer),
    )
    scores = iter([(0.5, 1.0), (0.7, 1.0), (0.4, 1.0), (0.5, 1.0)])  # start, check, confirm x2
    monkeypatch.setattr(online._BestKeeper, "_score", lambda self, a, **kw: next(scores))
    keeper = online._BestKeeper(_env, RefineConfig(), bundle)
    start = {k: v.clone() for k, v in actor.state_dict().items()}
    with torch.no_grad():
        actor.log_std.add_(0.3)  # a "different" policy wins the check
    keeper.check(actor, value, 1000)
    assert len(keeper.finalists) == 1
    got, _ = keeper.best(actor, value)
    assert keeper.confirmation["kept"] == "start"
    assert all(torch.equal(got.state_dict()[k], start[k]) for k in start)


def test_fresh_seeds_choose_among_the_finalists_and_the_winner_faces_the_start_on_others(tmp_path, monkeypatch):  # fmt: skip
    """Near-tied checks are ranked by noise: the finalists are scored again, on fresh seeds."""
    from flywheel import online

    bundle = _bundle(tmp_path)
    actor = copy.deepcopy(bundle.actor)
    calls = []
    scores = iter([
        (0.5, 1.0),  # the start
        (0.9, 1.0), (1.0, 2.0), (0.6, 1.0), (1.0, 1.0), (0.4, 9.0),  # checks at 1k ... 5k
        (0.90, 1.0), (0.96, 1.0), (0.92, 1.0),  # the finalists (2k, 4k, 1k) on fresh seeds
        (0.94, 1.0), (0.50, 1.0),  # the winner (4k) and the start on other fresh seeds
    ])  # fmt: skip

    def score(self, a, *, episodes=None, offset=10_000):
        calls.append((episodes, offset, a.log_std.detach().sum().item()))
        return next(scores)

    monkeypatch.setattr(online._BestKeeper, "_score", score)
    keeper = online._BestKeeper(_env, RefineConfig(), bundle)
    for k in range(1, 6):
        with torch.no_grad():
            actor.log_std.fill_(-k)  # each check sees another policy
        keeper.check(actor, None, 1000 * k)
    # the 0.6 check is pushed out by the 1.0 at 4k; the 0.4 one does not beat the start
    assert [f["env_steps"] for f in keeper.finalists] == [2000, 4000, 1000]
    got, _ = keeper.best(actor, None)
    assert keeper.confirmation["kept"] == "best" and keeper.confirmation["env_steps"] == 4000
    assert torch.equal(got.log_std, torch.full_like(got.log_std, -4.0))
    n, dim = RefineConfig().confirm_episodes, actor.log_std.numel()
    assert [c[:2] for c in calls[-5:]] == [(n, 20_000)] * 3 + [(n, 30_000)] * 2
    scored = [c[2] for c in calls[-5:]]  # whose weights: 2k, 4k, 1k, then the winner, the start
    assert scored[:4] == [-2.0 * dim, -4.0 * dim, -1.0 * dim, -4.0 * dim]
    assert scored[4] == bundle.actor.log_std.sum().item()
    ckpt = Resumable(tmp_path / "out", RefineConfig(), bundle)  # the keeper survives a checkpoint
    ckpt.save({"keeper": keeper.state_dict()})
    again = online._BestKeeper(_env, RefineConfig(), bundle, restore=ckpt.load()["keeper"])
    assert again.start_score == keeper.start_score
    for a, b in zip(again.finalists, keeper.finalists, strict=True):
        assert a["score"] == b["score"] and a["env_steps"] == b["env_steps"]
        assert torch.equal(a["actor"]["log_std"], b["actor"]["log_std"])


def test_refine_refuses_no_finalists():
    with pytest.raises(ValueError, match="finalists"):
        RefineConfig(finalists=0)
