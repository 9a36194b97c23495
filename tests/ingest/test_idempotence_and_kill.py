"""Re-ingesting adds nothing (source hash, checked before decoding); a SIGKILLed ingest leaves
the corpus valid and a re-run completes it."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flywheel.corpus import Corpus
from flywheel.corpus.maintenance import check_episode, repair, verify
from flywheel.ingest import IngestConfig, ingest, runner, video
from tests.ingest import fixtures as fx

ROOT = Path(__file__).resolve().parents[2]


def _sources(kind: str, tmp: Path) -> tuple[list[Path], IngestConfig, int]:
    """(sources, config, episode count) of one format."""
    if kind == "lerobot-v2.1":
        return [fx.lerobot_v21(tmp / "ds", [6, 7])], IngestConfig(), 2
    if kind == "lerobot-v3.0":
        return [fx.lerobot_v30(tmp / "ds", [6, 7, 5])], IngestConfig(), 3
    if kind == "mcap":
        fx.ros_bag(tmp / "run.mcap")
        (tmp / "map.toml").write_text(fx.MAPPING_TOML)
        return [tmp / "run.mcap"], IngestConfig(mapping=tmp / "map.toml"), 2
    if kind == "robomimic":
        return [fx.robomimic(tmp / "lift.hdf5", [4, 5])], IngestConfig(), 2
    if kind == "droid":
        return [fx.droid(tmp / "droid")], IngestConfig(), 1
    fx.dir_episode(tmp / "ds" / "a")
    fx.dir_episode(tmp / "ds" / "b", n=20)
    return [tmp / "ds"], IngestConfig(), 2


@pytest.mark.parametrize(
    "kind", ["lerobot-v2.1", "lerobot-v3.0", "mcap", "robomimic", "droid", "dir"]
)
def test_second_ingest_adds_nothing_and_decodes_nothing(tmp_path, corpus, monkeypatch, kind):
    sources, config, n = _sources(kind, tmp_path)
    first = ingest(sources, corpus, config)
    assert len(first.accepted) == n and first.quarantined == []
    ids = {e.episode_id for e in corpus.entries()}

    def refuse(*a, **k):
        raise AssertionError("a duplicate was decoded again")

    monkeypatch.setattr(video.VideoReader, "read", refuse)
    monkeypatch.setattr(runner, "assemble", refuse)
    again = ingest(sources, corpus, config)
    assert again.accepted == [] and again.quarantined == []
    assert sorted(d["episode_id"] for d in again.duplicates) == sorted(first.accepted)
    assert {e.episode_id for e in corpus.entries()} == ids


def test_a_moved_copy_is_the_same_recording(tmp_path, corpus):
    ds = fx.lerobot_v21(tmp_path / "ds", [6, 7])
    ingest([ds], corpus)
    shutil.copytree(ds, tmp_path / "elsewhere" / "ds")
    rep = ingest([tmp_path / "elsewhere" / "ds"], corpus)
    assert rep.accepted == [] and len(rep.duplicates) == 2


def test_refusals_are_not_recorded_twice(tmp_path, corpus):
    ds = fx.lerobot_v21(tmp_path / "ds", [6, 7], video_frames={1: 3})
    first = ingest([ds], corpus)
    again = ingest([ds], corpus)
    assert len(first.quarantined) == len(again.quarantined) == 1
    assert first.quarantined[0]["record"] == again.quarantined[0]["record"]
    assert len(corpus.quarantine.list()) == 1


def _proc(corpus: Path, src: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ingest.ingest_proc", str(corpus), str(src)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_sigkill_midway_leaves_a_valid_corpus_and_a_rerun_completes_it(tmp_path):
    n_eps = 10
    ds = tmp_path / "ds"
    for i in range(n_eps):
        fx.dir_episode(ds / f"ep_{i:02d}", n=40 + i, meta={"task": "wipe"})
    path = tmp_path / "c.zarr"
    Corpus.open_or_create(path)
    rng = random.Random(3)
    seen: set[str] = set()
    for round_ in range(3):
        p = _proc(path, ds)
        want = round_ + 1  # wait for one more new commit each round, then kill mid-stream
        new = 0
        while new < want:
            line = p.stdout.readline()
            assert line, "the ingest process ended before it was killed"
            outcome, _source = line.split(maxsplit=1)
            new += outcome == "accepted"
        time.sleep(rng.uniform(0.0, 0.05))
        p.send_signal(signal.SIGKILL)
        p.communicate()
        c = Corpus(path)
        rep = verify(c)
        assert rep.corrupt == [], rep.corrupt
        indexed = {e.episode_id for e in c.entries()}
        for episode_id in indexed - seen:  # every visible episode is whole
            assert check_episode(c, episode_id) is None
        assert len(indexed) < n_eps  # killed before the end
        seen |= indexed
    c = Corpus(path)
    before = len(c.entries())
    rep = ingest([ds], c)  # the re-run
    assert rep.quarantined == []
    assert len(rep.duplicates) == before and len(rep.accepted) == n_eps - before
    entries = c.entries()
    assert len(entries) == n_eps and len({e.source_hash for e in entries}) == n_eps
    repair(c)  # staging folders of killed writers
    assert verify(c).ok
