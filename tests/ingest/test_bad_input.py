"""One test per kind of bad input: each bad episode is quarantined with file, field and problem,
and the good episode beside it in the same run is still accepted."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from flywheel.corpus import Corpus
from flywheel.ingest import IngestConfig, ingest
from tests.ingest import fixtures as fx

VIDEO = "videos/chunk-000/observation.images.front/episode_{:06d}.mp4"
DATA = "data/chunk-000/episode_{:06d}.parquet"


def one_refusal(rep, corpus: Corpus, *, accepted: int = 1) -> dict:
    """The run's single quarantine entry, checked against the corpus's quarantine listing."""
    assert len(rep.accepted) == accepted, rep.to_json()
    assert len(rep.quarantined) == 1, rep.quarantined
    q = rep.quarantined[0]
    (rec,) = [r for r in corpus.quarantine.list() if r.id == q["record"]]
    assert (rec.source, rec.key, rec.reason) == (q["source"], q["field"], q["reason"])
    return q


def lerobot_with(tmp_path, mutate=None, **kw):
    """Episode 0 good, episode 1 as `mutate` leaves it."""
    return fx.lerobot_v21(
        tmp_path / "ds",
        [8, 8],
        mutate=(lambda ep, c: mutate(c) if ep == 1 else c) if mutate else None,
        **kw,
    )


def test_truncated_video(tmp_path, corpus):
    ds = lerobot_with(tmp_path)
    mp4 = ds / VIDEO.format(1)
    mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])  # the recorder died mid-file
    q = one_refusal(ingest([ds], corpus), corpus)
    assert q["source"] == f"{ds}#1" and q["field"] == "observation.images.front"
    assert q["reason"].startswith(str(mp4)) and "truncated" in q["reason"]


@pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="PyAV not installed")
def test_truncated_video_with_index_up_front_reports_the_frames_it_lost(tmp_path, corpus):
    """A faststart mp4 still opens when cut; the decoder finds fewer frames than it lists."""
    import av

    ds = lerobot_with(tmp_path)
    mp4 = ds / VIDEO.format(1)
    with av.open(str(mp4), "w", options={"movflags": "faststart"}) as out:
        s = out.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = fx.W, fx.H, "yuv420p"
        noise = np.random.default_rng(0).integers(0, 256, (8, fx.H, fx.W, 3), dtype=np.uint8)
        for f in noise:  # noise: frames big enough that a cut loses whole frames
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    data = mp4.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # the index is up front
    mp4.write_bytes(data[: (len(data) + data.find(b"mdat")) // 2])  # half the frame data
    q = one_refusal(ingest([ds], corpus), corpus)
    assert q["field"] == "observation.images.front"
    assert "truncated" in q["reason"] and "of the 8 frames" in q["reason"], q["reason"]


def test_undecodable_video(tmp_path, corpus):
    ds = lerobot_with(tmp_path)
    mp4 = ds / VIDEO.format(1)
    mp4.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    q = one_refusal(ingest([ds], corpus), corpus)
    assert q["field"] == "observation.images.front" and str(mp4) in q["reason"]
    assert "undecodable" in q["reason"]


def test_frame_count_mismatch(tmp_path, corpus):
    ds = lerobot_with(tmp_path, video_frames={1: 6})
    q = one_refusal(ingest([ds], corpus), corpus)
    assert q["field"] == "observation.images.front"
    assert "frame count mismatch: video has 6 frames, table has 8 rows" in q["reason"]
    assert q["reason"].startswith(str(ds / VIDEO.format(1)))


def test_frame_count_mismatch_with_the_episode_table(tmp_path, corpus):
    ds = lerobot_with(tmp_path)
    lines = (ds / "meta/episodes.jsonl").read_text().splitlines()
    ep1 = json.loads(lines[1]) | {"length": 9}
    (ds / "meta/episodes.jsonl").write_text(lines[0] + "\n" + json.dumps(ep1) + "\n")
    q = one_refusal(ingest([ds], corpus), corpus)
    assert q["field"] == "length" and "episode table says 9, data has 8 rows" in q["reason"]


@pytest.mark.parametrize("column,value", [("observation.state", np.nan), ("action", np.inf)])
def test_nan_or_inf(tmp_path, corpus, column, value):
    def mutate(c):
        c[column][5, 1] = value

    ds = lerobot_with(tmp_path, mutate)
    q = one_refusal(ingest([ds], corpus), corpus)
    assert q["field"] == column
    assert q["reason"] == f"{ds / DATA.format(1)}: NaN or inf at row 5 (t=0.500000 s)"


def test_non_monotonic_time(tmp_path, corpus):
    def mutate(c):
        c["timestamp"][[3, 4]] = c["timestamp"][[4, 3]]

    ds = lerobot_with(tmp_path, mutate)
    q = one_refusal(ingest([ds], corpus), corpus)
    assert q["field"] == "timestamp" and "time goes backwards at row 4" in q["reason"]


def test_missing_key(tmp_path, corpus):
    ds = lerobot_with(tmp_path, lambda c: {k: v for k, v in c.items() if k != "action"})
    q = one_refusal(ingest([ds], corpus), corpus)
    assert q["field"] == "action" and "missing" in q["reason"]
    assert q["reason"].startswith(str(ds / DATA.format(1)))


def test_missing_topic(tmp_path, corpus):
    fx.ros_bag(tmp_path / "run.mcap")
    good = tmp_path / "map.toml"
    good.write_text(fx.MAPPING_TOML)
    bad = tmp_path / "bad.toml"
    bad.write_text(fx.MAPPING_TOML.replace('topic = "/ee_pose"', 'topic = "/ee_pose_typo"'))
    rep = ingest([tmp_path / "run.mcap"], corpus, IngestConfig(mapping=bad))
    assert rep.accepted == [] and len(rep.quarantined) == 2  # both episodes of the bag
    q = rep.quarantined[0]
    assert q["field"] == "/ee_pose_typo" and "missing topic for obs/ee_pose" in q["reason"]
    assert "/joint_states" in q["reason"]  # says which topics the bag does have
    assert len(ingest([tmp_path / "run.mcap"], corpus, IngestConfig(mapping=good)).accepted) == 2


def test_shape_mismatch_inside_a_source(tmp_path, corpus):
    """A list column whose rows have different lengths (a joint dropped out mid-episode)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ds = lerobot_with(tmp_path)
    path = ds / DATA.format(1)
    t = pq.read_table(path)
    rows = t.column("observation.state").to_pylist()
    rows[3] = rows[3][:3]
    i = t.column_names.index("observation.state")
    pq.write_table(t.set_column(i, "observation.state", pa.array(rows)), path)
    q = one_refusal(ingest([ds], corpus), corpus)
    assert q["field"] == "observation.state"
    assert "shape mismatch: row 3 has 3 values, row 0 has 4" in q["reason"]


def test_shape_mismatch_against_the_corpus_spec(tmp_path, corpus):
    """Same task, a robot with one more joint: the corpus spec refuses it, named in source terms."""
    ingest([fx.lerobot_v21(tmp_path / "a", [6])], corpus, IngestConfig(task="pick"))

    def wider(ep, c):
        c["observation.state"] = np.concatenate(
            [c["observation.state"], c["observation.state"][:, :1]], 1
        )

    ds = fx.lerobot_v21(tmp_path / "b", [6, 7], mutate=wider)
    rep = ingest([ds], corpus, IngestConfig(task="pick"))
    assert rep.accepted == [] and len(rep.quarantined) == 2
    q = rep.quarantined[0]
    assert q["field"] == "observation.state"
    assert (
        "does not match the corpus spec" in q["reason"] and "(corpus key obs/state)" in q["reason"]
    )
    assert corpus.quarantine.list()[0].copy  # the refused arrays are kept for a look


def test_dtype_mismatch(tmp_path, corpus):
    def strings(c):
        c["observation.state"] = [str(r) for r in c["observation.state"]]

    ds = lerobot_with(tmp_path, strings)
    q = one_refusal(ingest([ds], corpus), corpus)
    assert q["field"] == "observation.state" and "is not numeric" in q["reason"]


@pytest.mark.parametrize("rows", [0, 1])
def test_zero_length(tmp_path, corpus, rows):
    ds = fx.lerobot_v21(tmp_path / "ds", [8, rows], cams=())
    q = one_refusal(ingest([ds], corpus), corpus)
    assert q["source"] == f"{ds}#1" and "zero-length episode" in q["reason"]


@pytest.mark.parametrize("damage", ["parquet", "info", "hdf5", "mcap", "npz", "unknown"])
def test_unreadable_file(tmp_path, corpus, damage):
    config = IngestConfig()
    if damage == "mcap":
        bad = path = tmp_path / "x.mcap"
        path.write_bytes(b"\x89MCAP0\r\n" + b"\xff" * 64)
        good = tmp_path / "good.mcap"
        fx.ros_bag(good, episodes=((0.5, 1.5, "end"),))
        (tmp_path / "map.toml").write_text(fx.MAPPING_TOML)
        config = IngestConfig(mapping=tmp_path / "map.toml")
        field, want = "(file)", "unreadable MCAP"
    elif damage == "parquet":  # episode 0 of the same dataset is the good one
        bad = good = lerobot_with(tmp_path)
        path = bad / DATA.format(1)
        path.write_bytes(b"PAR1" + b"\0" * 50)
        field, want = "(file)", "unreadable parquet"
    elif damage == "info":
        bad, good = lerobot_with(tmp_path), fx.lerobot_v21(tmp_path / "good", [5])
        path = bad / "meta/info.json"
        path.write_text("{not json")
        field, want = "(file)", "unreadable JSON"
    elif damage == "hdf5":
        bad = path = fx.robomimic(tmp_path / "x.hdf5", [5])
        good = fx.robomimic(tmp_path / "good.hdf5", [6])
        path.write_bytes(path.read_bytes()[:3000])
        field, want = "(file)", "unreadable HDF5"
    elif damage == "npz":
        bad, good = fx.dir_episode(tmp_path / "bad"), fx.dir_episode(tmp_path / "good")
        path = bad / "lowdim.npz"
        path.write_bytes(path.read_bytes()[:200])
        field, want = "(file)", "unreadable npz"
    else:
        bad = path = tmp_path / "notes.txt"
        good = fx.dir_episode(tmp_path / "good")
        path.write_text("hello")
        field, want = "(format)", "unrecognised file type .txt"
    rep = ingest([bad] if bad == good else [bad, good], corpus, config)
    q = one_refusal(rep, corpus)
    assert q["field"] == field and want in q["reason"] and str(path) in q["reason"]
