"""n-step transitions: the windows both sources draw, and the target `n_step_return` makes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flywheel.algorithms.base import (
    MixedSource,
    OfflineSource,
    ReplaySource,
    absorbing_reward,
    n_step_return,
)
from flywheel.algorithms.sac import SAC, SACConfig
from flywheel.policies import Normalizer, PolicySpec


def _two_env_replay(capacity: int, steps: int) -> ReplaySource:
    """Two envs: env 0 terminates at step 2 and restarts, env 1 hits a time limit at step 3.
    Observation x = 10 t + env; reward t + env / 2; next observation x + 100."""
    rep = ReplaySource(capacity=capacity, seed=0, n_step=3)
    for t in range(steps):
        obs = {"x": np.array([[10.0 * t], [10.0 * t + 1]], np.float32)}
        done = np.array([t == 2, False], np.float32)
        end = np.array([t == 2, t == 3])
        reward = np.array([t, t + 0.5], np.float32)
        rep.add(obs, np.zeros((2, 1), np.float32), reward, {"x": obs["x"] + 100}, done, end)
    return rep


def _window(rep: ReplaySource, x: float) -> tuple[list[float], float, float]:
    """(rewards that count, next observation, done) of the row whose observation is x."""
    j = int(np.flatnonzero(rep._data["obs"]["x"][:, 0] == x)[0])
    last, rewards, m = rep._window(np.array([j]))
    return rewards[0, : m[0]].tolist(), float(rep._data["next_obs"]["x"][last[0], 0]), float(rep._data["done"][last[0]])  # fmt: skip


def test_replay_windows_stop_at_episode_ends_and_the_newest_row():
    rep = _two_env_replay(capacity=100, steps=6)
    assert _window(rep, 0.0) == ([0.0, 1.0, 2.0], 120.0, 1.0)  # env 0, steps 0-2: terminated
    assert _window(rep, 10.0) == ([1.0, 2.0], 120.0, 1.0)  # its termination ends the window
    assert _window(rep, 20.0) == ([2.0], 120.0, 1.0)
    assert _window(rep, 30.0) == ([3.0, 4.0, 5.0], 150.0, 0.0)  # the next episode
    assert _window(rep, 11.0) == ([1.5, 2.5, 3.5], 131.0, 0.0)  # env 1's time limit, included
    assert _window(rep, 31.0) == ([3.5], 131.0, 0.0)  # ...and not crossed
    assert _window(rep, 41.0) == ([4.5, 5.5], 151.0, 0.0)  # the newest row of env 1
    assert _window(rep, 51.0) == ([5.5], 151.0, 0.0)


def test_replay_windows_follow_an_env_across_the_ring_buffers_wrap():
    rep = _two_env_replay(capacity=10, steps=7)  # steps 5 and 6 overwrote steps 0 and 1
    assert _window(rep, 40.0) == ([4.0, 5.0, 6.0], 160.0, 0.0)
    assert _window(rep, 21.0) == ([2.5, 3.5], 131.0, 0.0)


def test_replay_rows_come_one_per_env_always_as_many():
    rep = _two_env_replay(capacity=100, steps=2)
    with pytest.raises(ValueError, match="2 at a time"):
        rep.add({"x": np.zeros((3, 1), np.float32)}, np.zeros((3, 1), np.float32), np.zeros(3, np.float32),
                {"x": np.zeros((3, 1), np.float32)}, np.zeros(3, np.float32))  # fmt: skip


def test_replay_state_round_trip_keeps_the_windows():
    rep = _two_env_replay(capacity=100, steps=6)
    again = ReplaySource(capacity=100, seed=0, n_step=3)
    again.load_state_dict(rep.state_dict())
    a, b = rep.sample(32), again.sample(32)
    for k in ("rewards", "steps", "done", "reward"):
        assert torch.equal(a[k], b[k])
    assert torch.equal(a["next_obs"]["x"], b["next_obs"]["x"])


def test_a_replay_checkpoint_from_before_windows_loads_and_draws_one_step():
    state = _two_env_replay(capacity=100, steps=6).state_dict()
    del state["data"]["end"], state["width"]
    old = ReplaySource(capacity=100, seed=0, n_step=3)
    old.load_state_dict(state)
    batch = old.sample(16)
    assert (batch["steps"] == 1).all() and torch.equal(batch["rewards"][:, 0], batch["reward"])


@pytest.mark.parametrize("n", [0, -1, 2.5])
def test_a_window_of_no_whole_steps_is_refused(tiny_cache, n):
    with pytest.raises(ValueError, match="n_step must be"):
        OfflineSource(tiny_cache, n_step=n)
    with pytest.raises(ValueError, match="n_step must be"):
        ReplaySource(capacity=10, n_step=n)


def test_offline_windows_are_the_next_steps_of_the_same_episode(tiny_cache):
    one = OfflineSource(tiny_cache, seed=3).sample(400)
    three = OfflineSource(tiny_cache, seed=3, n_step=3).sample(400)
    j = np.random.default_rng(3).integers(0, tiny_cache.num_steps, 400)  # the sampler's draws
    episode = tiny_cache.episode_of_step()
    assert torch.equal(one["obs"]["joint_pos"], three["obs"]["joint_pos"])
    assert torch.equal(one["reward"], three["rewards"][:, 0])
    assert set(three["steps"].tolist()) == {1.0, 2.0, 3.0}  # windows cut short at episode ends
    for i in range(400):
        e, m = episode[j[i]], int(three["steps"][i])
        end = tiny_cache.act_start[e] + tiny_cache.lengths[e]
        assert m == min(3, end - j[i])
        np.testing.assert_array_equal(three["rewards"][i, :m].numpy(), tiny_cache.reward[j[i] : j[i] + m])  # fmt: skip
        assert (three["rewards"][i, m:] == 0).all()
        assert three["done"][i] == tiny_cache.terminated[j[i] + m - 1]
        np.testing.assert_array_equal(
            three["next_obs"]["joint_pos"][i].numpy(), tiny_cache.obs["joint_pos"][j[i] + e + m]
        )


def test_n_step_return_sums_discounted_rewards_and_counts_an_absorbing_end():
    batch = {
        "reward": torch.tensor([1.0, 1.0]),
        "rewards": torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 0.0]]),
        "steps": torch.tensor([3.0, 2.0]),
        "done": torch.tensor([0.0, 1.0]),
    }
    ret, disc = n_step_return(batch, 0.9)
    assert ret.tolist() == pytest.approx([1 + 0.9 * 2 + 0.81 * 3, 1 + 0.9 * 2 / 0.1])
    assert disc.tolist() == pytest.approx([0.729, 0.81])
    plain, _ = n_step_return(batch, 0.9, absorbing=False)
    assert plain[1].item() == pytest.approx(1 + 0.9 * 2)
    one = {"reward": torch.tensor([1.0, 2.0]), "done": torch.tensor([0.0, 1.0])}
    r, d = n_step_return(one, 0.9)  # a one-step batch: the one-step target
    assert torch.equal(r, absorbing_reward(one["reward"], one["done"], 0.9))
    assert d.tolist() == pytest.approx([0.9, 0.9])


def test_sac_learns_from_mixed_n_step_batches(tiny_cache):
    spec = PolicySpec(obs_shapes={k: v.shape[1:] for k, v in tiny_cache.obs.items()}, action_dim=4, hidden=(32, 32))  # fmt: skip
    norm = Normalizer.from_stats(spec.obs_shapes, tiny_cache.stats)
    off = OfflineSource(tiny_cache, seed=0, n_step=3)
    rep = ReplaySource(capacity=200, n_step=3)
    b = OfflineSource(tiny_cache, seed=1).sample(8)
    for _ in range(5):
        rep.add({k: v.numpy() for k, v in b["obs"].items()}, b["action"].numpy(), b["reward"].numpy(),
                {k: v.numpy() for k, v in b["next_obs"].items()}, np.zeros(8, np.float32))  # fmt: skip
    batch = MixedSource(off, rep).sample(64)
    assert batch["rewards"].shape == (64, 3) and batch["steps"].shape == (64,)
    sac = SAC(spec, norm, SACConfig(n_step=3))
    losses = [sac.update(batch)["q_loss"] for _ in range(60)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
