"""robomimic and DROID-style HDF5 (h5py) and the plain-directory format (numpy + OpenCV)."""

from __future__ import annotations

import json

import numpy as np

from flywheel.corpus import Corpus
from flywheel.ingest import IngestConfig, detect_format, ingest
from tests.ingest import fixtures as fx


def test_robomimic_keeps_every_step_and_the_final_observation(tmp_path, corpus):
    path = fx.robomimic(tmp_path / "lift_ph.hdf5", [5, 7])
    assert detect_format(path) == "hdf5"
    rep = ingest([path], corpus)
    assert rep.quarantined == [] and len(rep.accepted) == 2
    for i, (eid, n) in enumerate(zip(rep.accepted, [5, 7], strict=True)):
        ep = corpus.read(eid)
        assert ep.length == n  # obs + next_obs: N steps, N+1 observations
        pos = np.arange((n + 1) * 3, dtype=np.float32).reshape(n + 1, 3) + 1000 * i
        np.testing.assert_array_equal(ep.obs["robot0_eef_pos"], pos)
        np.testing.assert_array_equal(ep.action, np.full((n, 7), i) + np.arange(n)[:, None])
        np.testing.assert_array_equal(ep.reward, np.eye(1, n, n - 1)[0])
        assert ep.terminated.tolist() == [False] * (n - 1) + [True]  # from `dones`
        assert [fx.frame_index(f) for f in ep.images["agentview"]] == list(
            range(5 * i, 5 * i + n + 1)
        )
        m = ep.meta
        assert (m.task, m.robot, m.control_hz) == ("Lift", "Panda", 20.0)
        assert m.info["skipped"] == ["states"]  # N rows, not N+1: listed, not padded
        np.testing.assert_allclose(ep.timestamp, np.arange(n + 1) / 20)


def test_robomimic_nan_is_quarantined_per_demo(tmp_path, corpus):
    path = fx.robomimic(tmp_path / "lift.hdf5", [5, 6, 7], nan_in=1)
    rep = ingest([path], corpus)
    assert len(rep.accepted) == 2
    (q,) = rep.quarantined
    assert q["source"] == f"{path}#demo_1" and q["field"] == "data/demo_1/obs/robot0_eef_pos"
    assert "NaN or inf at row 3 (t=0.150000 s)" in q["reason"]  # row n // 2 of 6, at 20 Hz


def test_droid_style_folder(tmp_path, corpus):
    folder = fx.droid(tmp_path / "2023-07-07_success")
    assert detect_format(folder) == "hdf5"
    rep = ingest([folder], corpus, IngestConfig(task="marker_in_cup"))
    assert rep.quarantined == [], rep.quarantined
    ep = corpus.read(rep.accepted[0])
    m = ep.meta
    assert m.success is True and ep.terminated[-1]
    assert m.operator == "Bob_Smith" and m.info["operator_name"] == "Bob Smith"
    assert m.info["instruction"] == "put the marker in the cup"
    assert m.control_hz == 15.0 and ep.length == 11
    assert ep.action.shape == (11, 7)  # cartesian_position (6) + gripper_position (1)
    np.testing.assert_array_equal(ep.action[:, 0], np.arange(11))
    assert m.info["final_action"][0] == 11.0
    assert [fx.frame_index(f) for f in ep.images["cam_12345"]] == list(range(12))
    assert sorted(ep.obs) == ["gripper_position", "joint_positions"]
    stale = ep.extras["stale_images_cam_12345"]
    np.testing.assert_allclose(stale, 0.005, atol=1e-6)  # captured 5 ms before each step


def test_droid_late_frame_counts_as_stale(tmp_path, corpus):
    """Frame 5 captured 30 ms after its step: the step shows frame 4, 72 ms old (> 1 period)."""
    folder = fx.droid(tmp_path / "late", late={5: 30})
    rep = ingest([folder], corpus, IngestConfig(alignment=_lax()))
    ep = corpus.read(rep.accepted[0])
    assert [fx.frame_index(f) for f in ep.images["cam_12345"]][4:7] == [4, 4, 6]
    assert ep.meta.info["alignment"]["streams"]["images/cam_12345"]["stale_ticks"] == 1
    rep = ingest([folder], Corpus.create(tmp_path / "strict.zarr"))
    (q,) = rep.quarantined  # 1 of 12 ticks is 8 %: refused at the default 5 %
    assert q["field"] == "12345" and "too stale" in q["reason"]


def _lax():
    from flywheel.ingest import AlignmentConfig

    return AlignmentConfig(reject_stale_fraction=0.2)


def test_plain_directory_multi_rate_with_a_dropped_frame(tmp_path, corpus):
    ds = tmp_path / "wipe_dataset"
    fx.dir_episode(ds / "ep_000", video_drop={7})
    fx.dir_episode(ds / "ep_001")
    assert detect_format(ds) == "dir" and detect_format(ds / "ep_000") == "dir"
    rep = ingest([ds], corpus)
    assert rep.quarantined == [] and len(rep.accepted) == 2
    ep = corpus.read(rep.accepted[0])
    m = ep.meta
    assert (m.task, m.robot, m.operator, m.success) == ("wipe", "arm7", "carol", True)
    assert m.info["instruction"] == "wipe the table" and m.info["metadata"] == {"station": 3}
    assert ep.length == 29 and ep.terminated[-1]
    np.testing.assert_array_equal(ep.obs["joint_pos"][:, 0], np.arange(30))
    np.testing.assert_array_equal(ep.obs["force"][:, 0], 2 * np.arange(30))  # the 20 Hz array
    frames = [fx.frame_index(f) for f in ep.images["front"]]
    assert frames == [i if i != 7 else 6 for i in range(30)]  # the dropped frame: its predecessor
    a = m.info["alignment"]["streams"]["images/front"]
    assert a["drops"] == 1 and a["stale_ticks"] == 0  # exactly one period old: not beyond it
    np.testing.assert_allclose(
        ep.extras["ts_images_front"][6:9], 50.0005 + np.array([6, 6, 8]) / 10
    )
    assert set(ep.extras) >= {"ts_obs_force", "stale_obs_force", "ts_action", "stale_action"}


def test_plain_directory_episode_json_errors(tmp_path, corpus):
    bad = fx.dir_episode(tmp_path / "a", meta={"control_hz": "fast"})
    rep = ingest([bad], corpus)
    (q,) = rep.quarantined
    assert q["field"] == "control_hz" and str(bad / "episode.json") in q["reason"]
    bad2 = fx.dir_episode(tmp_path / "b", video=False)
    (bad2 / "episode.json").write_text(json.dumps({"control_hz": 10, "success": "yes"}))
    (q,) = ingest([bad2], corpus).quarantined
    assert q["field"] == "success"
