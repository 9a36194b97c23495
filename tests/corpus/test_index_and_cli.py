"""Index rebuild, deep verify catching damage, and the `flywheel corpus` commands end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from flywheel.corpus import Corpus, SnapshotMismatchError
from flywheel.corpus.maintenance import rebuild_index, repair, verify
from flywheel.corpus.synthetic import synthetic_episode


def test_rebuild_index_restores_a_lost_index_with_a_new_epoch(corpus):
    ids = [corpus.append(synthetic_episode(s, length=5)).episode_id for s in range(4)]
    recorded = corpus.snapshot().to_json()
    old_epoch = corpus.index.epoch()
    corpus.index.close()
    corpus.layout.index.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{corpus.layout.index}{suffix}").unlink(missing_ok=True)
    corpus.index.create()
    assert corpus.entries() == []
    out = rebuild_index(corpus)
    assert out["episodes"] == 4 and out["epoch"] != old_epoch
    assert [e.episode_id for e in corpus.entries()] == ids
    assert corpus.replay(recorded).episode_ids == ids  # same set: still replayable
    assert corpus.append(synthetic_episode(0, length=5)).duplicate


def test_replay_detects_a_snapshot_that_no_longer_matches(corpus):
    for s in range(3):
        corpus.append(synthetic_episode(s, length=5))
    recorded = corpus.snapshot().to_json()
    corpus.index.remove([corpus.entries()[0].episode_id])
    with pytest.raises(SnapshotMismatchError, match="no longer selects"):
        corpus.replay(recorded)


def test_deep_verify_finds_damaged_arrays_and_repair_quarantines_them(corpus):
    good = corpus.append(synthetic_episode(1, length=5)).episode_id
    bad = corpus.append(synthetic_episode(2, length=5)).episode_id
    g = zarr.open_group(corpus.layout.episode(bad), mode="r+")
    g["action"][0, 0] = 0.123  # silent damage after commit
    assert verify(corpus).ok  # the fast check does not read arrays
    rep = verify(corpus, deep=True)
    assert [b["episode_id"] for b in rep.corrupt] == [bad]
    assert "action" in rep.corrupt[0]["reason"]
    done = repair(corpus, deep=True)
    assert [b["episode_id"] for b in done["quarantined_corrupt"]] == [bad]
    assert [e.episode_id for e in corpus.entries()] == [good]
    assert (corpus.layout.quarantine / f"corrupt-{bad}").exists()
    assert verify(corpus, deep=True).ok


def test_missing_episode_folder_is_reported_corrupt(corpus):
    e = corpus.append(synthetic_episode(1, length=5)).episode_id
    shutil.rmtree(corpus.layout.episode(e))
    rep = verify(corpus)
    assert not rep.ok and rep.corrupt[0]["episode_id"] == e


def _fw(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flywheel.cli", *args],
        capture_output=True,
        text=True,
        env={"FLYWHEEL_HOME": str(home), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        timeout=120,
    )


def test_cli_init_info_verify_repair_export(tmp_path):
    home = tmp_path / "home"
    assert _fw("corpus", "init", home=home).returncode == 0
    c = Corpus(home / "corpus.zarr")
    for s in range(3):
        c.append(synthetic_episode(s, length=12, cameras=("front",), image_size=48))
    c.append(synthetic_episode(7, length=4, task="push", source="real"))
    info = json.loads(_fw("corpus", "info", "--json", home=home).stdout)
    assert info["episodes"] == 4 and info["frames"] == 40 and info["schema_version"] == "1.0.0"
    assert info["by_source"] == {"sim": 3, "real": 1}
    assert info["by_task"]["reach"]["episodes"] == 3 and info["by_task"]["push"]["frames"] == 4
    v = _fw("corpus", "verify", "--json", home=home)
    assert v.returncode == 0 and json.loads(v.stdout) | {"corrupt": [], "orphans": 0} == json.loads(
        v.stdout
    )
    listed = json.loads(_fw("corpus", "list", "--task", "reach", "--json", home=home).stdout)
    ep = listed["episodes"][0]["episode_id"]
    out = tmp_path / "ep.mp4"
    r = _fw("corpus", "export-video", ep, "--camera", "front", "-o", str(out), "--json", home=home)
    assert r.returncode == 0, r.stderr
    cap = cv2.VideoCapture(str(out))
    n, first = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        first = frame if first is None else first
        n += 1
    assert n == 13 and first.shape == (48, 48, 3) and first.std() > 10
    bad = _fw("corpus", "export-video", ep, "--camera", "nope", "-o", str(out), home=home)
    assert bad.returncode == 2 and "no camera 'nope'" in bad.stderr
    (c.layout.staging / "dead.1").mkdir()
    import os

    os.utime(c.layout.staging / "dead.1", (0, 0))  # older than the grace period
    v = _fw("corpus", "verify", "--json", home=home)
    assert v.returncode == 1 and json.loads(v.stdout)["orphans"] == 1
    assert _fw("corpus", "repair", home=home).returncode == 0
    assert _fw("corpus", "verify", home=home).returncode == 0


def test_cli_on_a_missing_corpus_says_what_to_do(tmp_path):
    r = _fw("corpus", "info", home=tmp_path / "none")
    assert r.returncode == 2 and "flywheel corpus init" in r.stderr


def test_stats_in_index_match_group_metadata(corpus):
    e = corpus.append(synthetic_episode(5, length=9)).episode_id
    assert corpus.entries()[0].meta["stats"] == corpus.metadata(e)["stats"]
    m = corpus.entries()[0].meta["stats"]["obs/ee_pos"]
    np.testing.assert_allclose(
        m["mean"], synthetic_episode(5, length=9).obs["ee_pos"].mean(0), rtol=1e-6
    )
