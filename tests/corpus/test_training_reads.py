"""Training reads: merged statistics, the RAM cache, transition and window samplers."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.corpus import (
    CorpusError,
    Filter,
    KeyStats,
    TrainingCache,
    TransitionSampler,
    WindowSampler,
)
from flywheel.corpus import cache as cache_module
from flywheel.corpus.synthetic import synthetic_episode


@pytest.fixture
def filled(corpus):
    lengths = [1, 2, 7, 30, 3]  # short episodes on purpose: padding and edges
    eps = [synthetic_episode(s, length=n) for s, n in enumerate(lengths)]
    for ep in eps:
        corpus.append(ep)
    return corpus, eps


def test_merged_stats_equal_stats_of_all_data(filled):
    corpus, eps = filled
    merged = corpus.snapshot().stats()
    for key in ("obs/joint_pos", "obs/ee_pos", "action", "reward"):
        name = key.split("/")[-1]
        data = np.concatenate(
            [ep.obs[name] if key.startswith("obs/") else getattr(ep, key) for ep in eps]
        )
        direct = KeyStats.of(data)
        m = merged[key]
        assert m.count == direct.count == len(data)
        np.testing.assert_allclose(m.mean, direct.mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(
            m.var, data.astype(np.float64).var(axis=0), rtol=1e-10, atol=1e-15
        )
        np.testing.assert_array_equal(m.min, direct.min)
        np.testing.assert_array_equal(m.max, direct.max)


def test_cache_holds_every_episode_contiguously(filled):
    corpus, eps = filled
    cache = TrainingCache.build(corpus, corpus.snapshot())
    assert cache.num_episodes == 5 and cache.num_steps == sum(ep.length for ep in eps)
    for i, ep in enumerate(eps):
        o, a, T = cache.obs_start[i], cache.act_start[i], cache.lengths[i]
        np.testing.assert_array_equal(cache.obs["joint_pos"][o : o + T + 1], ep.obs["joint_pos"])
        np.testing.assert_array_equal(cache.action[a : a + T], ep.action)
    assert cache.snapshot["episodes"] == 5 and cache.snapshot["generation"] == 5
    assert set(cache.obs) == {"joint_pos", "ee_pos", "goal"}


def test_gathered_reads_equal_one_by_one_reads_and_name_missing_keys_and_corrupt_chunks(
    filled, monkeypatch
):
    corpus, eps = filled
    ids = [e.episode_id for e in corpus.snapshot().entries]
    keys = ["obs/joint_pos", "action", "reward", "terminated"]
    for i, got in zip(ids, corpus.read_many(ids, keys), strict=True):
        want = corpus.read_arrays(i, keys)
        assert got.keys() == want.keys()
        for k in keys:
            np.testing.assert_array_equal(got[k], want[k])
    with pytest.raises(CorpusError, match="has no key 'obs/nope'") as err:
        corpus.read_many(ids, ["action", "obs/nope"])
    assert any(f"episode {i} " in str(err.value) for i in ids)
    # a snapshot larger than one gathered chunk is read in several, in order
    monkeypatch.setattr(cache_module, "READ_CHUNK", 2)
    cache = TrainingCache.build(corpus, corpus.snapshot())
    for i, ep in enumerate(eps):
        a, T = cache.act_start[i], cache.lengths[i]
        np.testing.assert_array_equal(cache.action[a : a + T], ep.action)
    # a corrupt chunk is named by episode folder and key, not left as a bare codec error
    chunk = next(p for p in (corpus.layout.episode(ids[2]) / "action").rglob("*") if p.is_file() and p.name != "zarr.json")  # fmt: skip
    chunk.write_bytes(b"garbage")
    for read in (lambda: corpus.read_many(ids, ["action"]), lambda: corpus.read_arrays(ids[2], ["action"])):  # fmt: skip
        with pytest.raises(CorpusError, match=f"{ids[2]}/action: unreadable"):
            read()


def test_transitions_pair_each_step_with_its_own_next_observation(filled):
    corpus, eps = filled
    cache = TrainingCache.build(corpus, corpus.snapshot())
    s = TransitionSampler(cache, batch_size=cache.num_steps)
    b = s.sample(np.arange(cache.num_steps))
    j = 0
    for ep in eps:
        for t in range(ep.length):
            np.testing.assert_array_equal(b["obs"]["ee_pos"][j], ep.obs["ee_pos"][t])
            np.testing.assert_array_equal(b["next_obs"]["ee_pos"][j], ep.obs["ee_pos"][t + 1])
            assert b["reward"][j] == ep.reward[t] and b["done"][j] == ep.terminated[t]
            j += 1
    rnd = TransitionSampler(cache, batch_size=256, seed=3).sample()
    assert rnd["action"].shape == (256, 4) and rnd["obs"]["joint_pos"].shape == (256, 7)


def test_windows_pad_at_edges_with_masks_and_never_cross_episodes(filled):
    corpus, eps = filled
    cache = TrainingCache.build(corpus, corpus.snapshot())
    ws = WindowSampler(cache, n_obs=3, n_action=4)
    b = ws.sample(np.arange(cache.num_steps))
    j = 0
    for ep in eps:
        T = ep.length
        for t in range(T):
            for k, step in enumerate(range(t - 2, t + 1)):
                want = ep.obs["ee_pos"][max(step, 0)]
                np.testing.assert_array_equal(b["obs"]["ee_pos"][j, k], want)
                assert b["obs_mask"][j, k] == (step >= 0)
            for k, step in enumerate(range(t, t + 4)):
                np.testing.assert_array_equal(b["action"][j, k], ep.action[min(step, T - 1)])
                assert b["action_mask"][j, k] == (step < T)
            j += 1
    one = ws.sample()
    assert one["obs"]["joint_pos"].shape == (256, 3, 7) and one["action"].shape == (256, 4, 4)


def test_success_weighting_samples_only_successful_steps(corpus):
    for s in range(6):
        corpus.append(synthetic_episode(s, length=10 + s))
    ep = synthetic_episode(99, length=8)
    ep.meta = ep.meta.__class__(**{**ep.meta.__dict__, "success": False})
    corpus.append(ep)
    cache = TrainingCache.build(corpus, corpus.snapshot())
    ok = np.repeat(np.array([bool(x) for x in cache.success]), cache.lengths)
    s = TransitionSampler(cache, batch_size=512, weights=ok.astype(float))
    assert ok[s.indices()].all()


def test_snapshot_filters_and_replays(corpus):
    for s in range(4):
        corpus.append(synthetic_episode(s, length=5, task="reach"))
    corpus.append(synthetic_episode(10, length=5, task="push", source="real"))
    snap = corpus.snapshot(Filter(task="reach"))
    assert len(snap.entries) == 4
    recorded = snap.to_json()
    corpus.append(synthetic_episode(11, length=5, task="reach"))  # the corpus moves on
    again = corpus.replay(recorded)
    assert again.episode_ids == snap.episode_ids and again.generation == snap.generation
    assert len(corpus.snapshot(Filter(task="reach")).entries) == 5
    assert [e.task for e in corpus.entries(Filter(source="real"))] == ["push"]
    wins = [e for e in corpus.entries(Filter(task="reach")) if e.success]
    assert corpus.entries(Filter(success=True, task="reach")) == wins
    assert len(corpus.entries(Filter(success=False))) == 6 - len(wins)
    t = corpus.entries()[2].created
    assert len(corpus.entries(Filter(since=t))) == 4 and len(corpus.entries(Filter(until=t))) == 2
    assert len(corpus.entries(Filter(policy_version="synthetic"))) == 6
