"""LeRobot v2.1 and v3.0 datasets written with pyarrow and OpenCV's VideoWriter."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from flywheel.ingest import IngestConfig, detect_format, ingest
from tests.ingest import fixtures as fx


def test_v21_round_trip_keeps_values_frames_and_metadata(tmp_path, corpus):
    ds = fx.lerobot_v21(tmp_path / "so100_pick", [12, 9], cams=("front", "wrist"))
    assert detect_format(ds) == "lerobot"
    rep = ingest([ds], corpus)
    assert rep.quarantined == [] and len(rep.accepted) == 2
    for ep_index, (eid, n) in enumerate(zip(rep.accepted, [12, 9], strict=True)):
        ep = corpus.read(eid)
        rows = fx.episode_rows(ep_index, n, 0, 10)
        assert ep.length == n - 1  # n observations, n - 1 actions
        np.testing.assert_array_equal(ep.obs["state"], rows["observation.state"])
        np.testing.assert_array_equal(ep.action, rows["action"][:-1])
        assert ep.meta.info["final_action"] == rows["action"][-1].tolist()
        np.testing.assert_allclose(ep.timestamp, np.arange(n) / 10, atol=1e-6)
        for cam in ("front", "wrist"):
            got = [fx.frame_index(f) for f in ep.images[cam]]
            assert got == [(10 * ep_index + i) % fx.PERIOD for i in range(n)]
        m = ep.meta
        assert (m.source, m.task, m.robot, m.control_hz) == ("real", "so100_pick", "so100", 10.0)
        assert m.info["instruction"] == "pick up the cube"
        assert m.info["cameras"] == ["front", "wrist"]
        assert m.info["names"]["obs/state"] == ["j0", "j1", "j2", "j3"]
        assert m.info["fields"]["obs/state"] == "observation.state"
        assert ep.truncated[-1] and not ep.terminated.any()  # outcome unknown: not a terminal
        assert ep.images["front"].shape == (n, fx.H, fx.W, 3)


@pytest.mark.parametrize("task_column", ["task", "__index_level_0__"])
def test_v30_episodes_packed_in_one_video_get_their_own_frames(tmp_path, corpus, task_column):
    """v3.0 packs episodes into one mp4; each must get exactly its time range's frames."""
    ds = fx.lerobot_v30(tmp_path / "koch", [8, 10, 7], task_column=task_column)
    rep = ingest([ds], corpus, IngestConfig(task="stack"))
    assert rep.quarantined == [] and len(rep.accepted) == 3
    first = 0
    for i, (eid, n) in enumerate(zip(rep.accepted, [8, 10, 7], strict=True)):
        ep = corpus.read(eid)
        assert [fx.frame_index(f) for f in ep.images["front"]] == [
            (first + k) % fx.PERIOD for k in range(n)
        ]
        np.testing.assert_array_equal(ep.obs["state"][:, 0], i)  # rows of this episode only
        assert ep.meta.info["instruction"] == f"task {i % 2}"
        assert ep.meta.info["format"] == "lerobot-v3.0" and ep.meta.robot == "koch"
        first += n


def test_v30_episode_read_out_of_order_seeks_back(tmp_path, monkeypatch):
    """Episodes of one shared video in any order get their frames; in order, no seek at all."""
    from flywheel.ingest import video
    from flywheel.ingest.assemble import assemble
    from flywheel.ingest.lerobot import episodes
    from flywheel.ingest.sources import IngestContext

    jumps: list[float] = []
    jump = video._CvVideo._jump
    monkeypatch.setattr(video._CvVideo, "_jump", lambda self, t: (jumps.append(t), jump(self, t)))
    ds = fx.lerobot_v30(tmp_path / "koch", [30, 30, 30])  # 3 s each: far enough to seek
    ctx = IngestContext(config=IngestConfig(), frame_size=lambda cam, native: native)
    for order, n_jumps in (((2, 0, 1), 2), ((0, 1, 2), 0)):
        jumps.clear()
        listed = list(episodes(ds, ctx))
        for i in order:  # (2, 0, 1): a seek forward, a reopen back, then straight on
            ep = assemble(listed[i].read(), IngestConfig().alignment, ctx.frame_size)
            want = [(30 * i + k) % fx.PERIOD for k in range(30)]
            assert [fx.frame_index(f) for f in ep.images["front"]] == want, (order, i)
        assert len(jumps) == n_jumps, (order, jumps)


def test_image_size_and_declared_camera_size(tmp_path, corpus):
    ds = fx.lerobot_v21(tmp_path / "a", [6])
    ingest([ds], corpus, IngestConfig(image_size=(12, 16)))
    (eid,) = corpus.index.query(None)[0:1]
    assert corpus.read(eid.episode_id).images["front"].shape == (6, 12, 16, 3)
    # the corpus now declares front as 12x16: a later ingest asking for another size follows it
    ds2 = fx.lerobot_v21(tmp_path / "b", [5, 7])
    rep = ingest([ds2], corpus, IngestConfig(image_size=(24, 32)))
    assert rep.quarantined == []
    assert corpus.read(rep.accepted[0]).images["front"].shape == (5, 12, 16, 3)


@pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="PyAV not installed")
@pytest.mark.parametrize(
    "codec,names",
    [("libsvtav1", ("av1", "av01")), ("libx264", ("h264", "avc1")), ("libx265", ("hevc", "hev1"))],
)
def test_av1_h264_and_hevc_videos_decode(tmp_path, corpus, codec, names):
    """AV1 is LeRobot's default (OpenCV's wheel cannot decode it here: PyAV does); H.264 and
    HEVC are common in older datasets."""
    ds = fx.lerobot_v21(tmp_path / "ds", [10])
    mp4 = ds / "videos/chunk-000/observation.images.front/episode_000000.mp4"
    fx.write_pyav(mp4, fx.frames(10), 10, codec)
    rep = ingest([ds], corpus)
    assert rep.quarantined == [], rep.quarantined
    ep = corpus.read(rep.accepted[0])
    assert [fx.frame_index(f) for f in ep.images["front"]] == list(range(10))
    video = ep.meta.info["video"]["observation.images.front"]
    assert any(n in video["codec"].lower() for n in names), video


def test_image_features_stored_as_png_bytes_in_parquet(tmp_path, corpus):
    """Older datasets keep camera frames as `image` features: encoded bytes in a struct column."""
    import json

    import cv2

    def with_images(ep, cols):
        pngs = [cv2.imencode(".png", f)[1].tobytes() for f in fx.frames(len(cols["timestamp"]))]
        cols["observation.images.top"] = [{"bytes": b, "path": None} for b in pngs]
        return cols

    ds = fx.lerobot_v21(tmp_path / "ds", [6, 5], cams=(), mutate=with_images)
    info = json.loads((ds / "meta/info.json").read_text())
    info["features"]["observation.images.top"] = {"dtype": "image", "shape": [fx.H, fx.W, 3]}
    (ds / "meta/info.json").write_text(json.dumps(info))
    rep = ingest([ds], corpus)
    assert rep.quarantined == [] and len(rep.accepted) == 2
    ep = corpus.read(rep.accepted[1])
    assert [fx.frame_index(f) for f in ep.images["top"]] == list(range(5))
    assert len(ingest([ds], corpus).duplicates) == 2  # the bytes are part of the hash
