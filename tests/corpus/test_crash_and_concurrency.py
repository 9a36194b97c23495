"""Nothing is lost: SIGKILLed writers, concurrent writers and duplicate content, with real processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from flywheel.corpus import Corpus
from flywheel.corpus.maintenance import check_episode, repair, verify
from flywheel.corpus.synthetic import synthetic_episode
from flywheel.corpus.writer import encode, publish, stage

ROOT = Path(__file__).resolve().parents[2]


def _writer(path: Path, first: int, count: int, cams: str = "") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.corpus.writer_proc", str(path), str(first), str(count), cams],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _committed(out: str) -> dict[int, str]:
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {int(s): i for s, i, _ in rows}


def test_sigkill_at_random_points_never_leaves_a_partial_episode(tmp_path):
    path = tmp_path / "c.zarr"
    Corpus.create(path)
    rng = random.Random(7)
    committed: dict[int, str] = {}
    leftovers = 0
    checked: set[str] = set()
    for round_ in range(8):
        p = _writer(path, 1000 * round_, 200, "front,wrist")
        first = p.stdout.readline()  # past start-up (slow on a loaded machine): in the write loop
        time.sleep(rng.uniform(0.0, 0.8))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        committed.update(_committed(first + out))
        c = Corpus(path)
        rep = verify(c)
        assert rep.corrupt == [], rep.corrupt
        indexed = {e.episode_id for e in c.entries()}
        for episode_id in sorted(indexed - checked):  # every visible episode is whole
            assert check_episode(c, episode_id) is None, episode_id
        checked |= indexed
        # every commit the writer reported is visible; at most the one in flight is extra
        assert set(committed.values()) <= indexed
        assert len(indexed - set(committed.values())) <= round_ + 1
        # the writer is dead: any staging folder it had begun writing is known stale at once; only
        # a folder it created but had not locked yet (empty) waits out the grace period
        for d in c.layout.staging.iterdir():
            assert d.name in rep.stale_staging or not any(d.iterdir()), d
        leftovers += rep.orphans
        if rep.orphans:
            assert not rep.ok
            repair(c)
        if rep.active_staging:
            import flywheel.corpus.maintenance as m

            grace, m.STAGING_GRACE_S = m.STAGING_GRACE_S, 0.0
            try:
                repair(c)
            finally:
                m.STAGING_GRACE_S = grace
        assert verify(c).ok
    c = Corpus(path)
    for seed, episode_id in list(committed.items())[::5]:  # earlier commits are intact
        back = c.read(episode_id, images=False)
        want = synthetic_episode(seed, length=20 + seed % 7, image_size=32)
        np.testing.assert_array_equal(back.obs["joint_pos"], want.obs["joint_pos"])
    assert len(committed) > 8  # the kills did land mid-stream, after real work
    assert leftovers >= 1  # and at least one landed inside a commit


def test_killed_between_rename_and_index_insert_is_adopted_by_repair(corpus):
    """The one window a rename-then-index commit has: a complete group with no index row."""
    corpus.append(synthetic_episode(1, length=5))
    ep = synthetic_episode(2, length=5)
    from flywheel.corpus.episode import validate

    enc = encode(validate(ep), corpus.spec)
    staged = corpus.layout.staging / "x.1"
    staged.mkdir()
    stage(staged, "20990101T000000000000Z-aaaaaaaaaaaa", time.time(), enc, durable=False)
    publish(corpus.layout, staged, "20990101T000000000000Z-aaaaaaaaaaaa", durable=False)
    rep = verify(corpus)
    assert rep.unindexed == ["20990101T000000000000Z-aaaaaaaaaaaa"] and rep.orphans == 1
    assert len(corpus.entries()) == 1  # not visible to readers
    done = repair(corpus)
    assert done["adopted"] == ["20990101T000000000000Z-aaaaaaaaaaaa"]
    assert verify(corpus).ok and len(corpus.entries()) == 2
    assert corpus.append(ep).duplicate  # adopted content is known to dedupe


def test_stale_staging_is_reported_and_removed_live_staging_is_kept(corpus, monkeypatch):
    import flywheel.corpus.maintenance as m
    from flywheel.corpus.layout import flocked

    (corpus.layout.staging / "dead.123").mkdir()
    (corpus.layout.staging / "dead.123" / "zarr.json").write_text("{}")  # a writer had begun
    (corpus.layout.staging / "new.789").mkdir()  # empty and young: maybe a writer about to lock
    live = corpus.layout.staging / "live.456"
    live.mkdir()
    with flocked(live, exclusive=True):
        rep = verify(corpus)
        assert rep.stale_staging == ["dead.123"] and rep.active_staging == 2
        assert not rep.ok and rep.orphans == 1
        assert repair(corpus)["removed_staging"] == 1
        assert live.exists() and not (corpus.layout.staging / "dead.123").exists()
        monkeypatch.setattr(m, "STAGING_GRACE_S", 0.0)  # once the grace period is over
        assert verify(corpus).stale_staging == ["new.789"]


def test_four_concurrent_writers_give_exactly_100_distinct_complete_episodes(tmp_path):
    path = tmp_path / "c.zarr"
    procs = [_writer(path, 100 * k, 25) for k in range(4)]  # they race to create it, too
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    committed: dict[int, str] = {}
    for out, _ in outs:
        committed.update(_committed(out))
    c = Corpus(path)
    entries = c.entries()
    assert len(entries) == 100 and len({e.episode_id for e in entries}) == 100
    assert {e.episode_id for e in entries} == set(committed.values())
    assert verify(c, deep=True).ok
    for seed, episode_id in committed.items():  # never mixed: each holds its own writer's data
        assert c.metadata(episode_id)["info"]["seed"] == seed
    back = c.read(committed[301], images=False)
    np.testing.assert_array_equal(back.action, synthetic_episode(301, length=20 + 301 % 7).action)


def test_same_content_twice_is_one_episode_even_from_two_processes(tmp_path):
    path = tmp_path / "c.zarr"
    Corpus.create(path)
    procs = [_writer(path, 0, 10) for _ in range(2)]  # both write seeds 0..9
    outs = [p.communicate(timeout=120)[0] for p in procs]
    c = Corpus(path)
    assert len(c.entries()) == 10
    rows = [line.split() for out in outs for line in out.splitlines()]
    assert sum(int(d) for _, _, d in rows) == 10  # each seed: one commit, one duplicate
    assert len({i for _, i, _ in rows}) == 10  # the duplicate reports the existing id
    assert os.listdir(c.layout.staging) == []
    r = c.append(synthetic_episode(3, length=20 + 3))
    assert r.duplicate and c.info()["episodes"] == 10
