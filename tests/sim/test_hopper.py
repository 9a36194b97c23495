"""The batched Hopper is Gymnasium's Hopper-v5, step for step, alone and inside an EnvPool."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from flywheel.rollout import EnvPool, GymEnvs
from sim.hopper import HopperBatch, HopperConfig, HopperV5


def _actions(rng: np.random.Generator, n: int) -> np.ndarray:
    # beyond the control range too: MuJoCo clamps, on both sides alike
    return rng.uniform(-1.5, 1.5, (n, 3)).astype(np.float32)


@pytest.mark.parametrize("max_steps", [1000, 25])
def test_same_episodes_as_gymnasium(max_steps):
    n, rng = 3, np.random.default_rng(0)
    cfg = HopperConfig(max_episode_steps=max_steps)
    ours = HopperBatch(n, cfg)
    theirs = [HopperV5(cfg)() for _ in range(n)]
    seeds = iter(range(100))
    for i in range(n):
        s = next(seeds)
        o, info = ours.reset_one(i, seed=s)
        g, ginfo = theirs[i].reset(seed=s)
        np.testing.assert_array_equal(o, g)
        assert info == ginfo
    ends = 0
    for _ in range(300):
        a = _actions(rng, n)
        obs, reward, term, trunc = ours.step(a)
        for i, env in enumerate(theirs):
            g, r, te, tr, _ = env.step(a[i])
            np.testing.assert_array_equal(obs[i], g)
            assert reward[i] == r and term[i] == te and trunc[i] == tr
            if te or tr:
                ends += 1
                s = next(seeds) if ends % 2 else None  # a new seed, or the env's generator on
                np.testing.assert_array_equal(ours.reset_one(i, seed=s)[0], env.reset(seed=s)[0])
    assert ends >= 5  # random actions topple the hopper well within 300 steps


def test_spaces_and_bad_size():
    env = HopperBatch(2)
    assert env.single_observation_space.shape == gym.make("Hopper-v5").observation_space.shape
    assert env.single_action_space == gym.make("Hopper-v5").action_space
    with pytest.raises(ValueError, match="num_envs"):
        HopperBatch(0)
    with pytest.raises(RuntimeError, match="before every env was reset"):
        env.step(np.zeros((2, 3)))
    env.reset_one(0, seed=0)
    env.reset_one(1, seed=1)
    with pytest.raises(ValueError, match=r"actions must be \(2, 3\), not \(2, 1\)"):
        env.step(np.ones((2, 1)))  # would broadcast into every actuator
    env.step(np.zeros((2, 3)))
    env.close()
    with pytest.raises(RuntimeError, match="after close"):
        env.step(np.zeros((2, 3)))


def test_pool_uses_the_batch_and_matches_single_envs():
    factory = HopperV5()
    fast = EnvPool([factory] * 4, seed=3)
    slow = EnvPool([lambda: gym.make("Hopper-v5")] * 4, seed=3)
    assert isinstance(fast.envs, HopperBatch) and isinstance(slow.envs, GymEnvs)
    rng = np.random.default_rng(1)
    done_fast, done_slow = [], []
    for _ in range(200):
        np.testing.assert_array_equal(fast.batch()["state"], slow.batch()["state"])
        a = _actions(rng, 4)
        f, s = fast.step(a), slow.step(a)
        np.testing.assert_array_equal(f[1], s[1])
        assert sorted(f[4]) == sorted(s[4])
        done_fast += f[5]
        done_slow += s[5]
    assert len(done_fast) >= 3
    for a, b in zip(done_fast, done_slow, strict=True):
        assert (a.seed, a.rewards, a.terminated, a.truncated) == (b.seed, b.rewards, b.terminated, b.truncated)  # fmt: skip
        np.testing.assert_array_equal(np.stack([o["state"] for o in a.obs]), np.stack([o["state"] for o in b.obs]))  # fmt: skip


def test_worker_processes_step_the_batched_hopper_like_gymnasium():
    """A `ProcessEnvPool` sends the factory to its worker, which builds one batch for its share:
    the episodes equal Gymnasium's envs stepped in this process, share by share."""
    from flywheel.workers import SEED_STRIDE, ProcessEnvPool

    gym_env = lambda: gym.make("Hopper-v5")  # noqa: E731
    pool = ProcessEnvPool([HopperV5()] * 4, workers=1, local_share=True, seed=5)
    shares = [EnvPool([gym_env] * 2, seed=5), EnvPool([gym_env] * 2, seed=5 + SEED_STRIDE)]
    rng = np.random.default_rng(2)
    try:
        for _ in range(120):
            a = _actions(rng, 4)
            got = pool.step(a)
            want = [p.step(a[2 * i : 2 * i + 2]) for i, p in enumerate(shares)]
            np.testing.assert_array_equal(got[0]["state"], np.concatenate([w[0]["state"] for w in want]))  # fmt: skip
            np.testing.assert_array_equal(got[1], np.concatenate([w[1] for w in want]))
            assert [e.seed for e in got[5]] == [e.seed for w in want for e in w[5]]
    finally:
        for p in [pool, *shares]:
            p.close()
