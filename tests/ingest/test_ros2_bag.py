"""ROS 2 bags written with the `mcap` ROS 2 writer: mapping, markers, alignment, crashed bags."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.ingest import IngestConfig, MappingError, detect_format, ingest, load_mapping
from tests.ingest import fixtures as fx

T0 = 1000.0


@pytest.fixture
def mapping(tmp_path):
    p = tmp_path / "map.toml"
    p.write_text(fx.MAPPING_TOML)
    return p


def test_two_marked_episodes_with_four_rates_on_one_grid(tmp_path, corpus, mapping):
    bag = tmp_path / "run.mcap"
    fx.ros_bag(bag)
    assert detect_format(bag) == "mcap"
    rep = ingest([bag], corpus, IngestConfig(mapping=mapping))
    assert rep.quarantined == [] and rep.flagged == [] and len(rep.accepted) == 2
    first, second = (corpus.read(e) for e in rep.accepted)
    assert (first.meta.success, second.meta.success) == (True, False)  # from the end markers
    assert first.terminated[-1] and second.truncated[-1]
    for ep, start in ((first, 0.5), (second, 3.0)):
        m = ep.meta
        assert (m.task, m.robot, m.operator, m.control_hz) == ("pick", "ur5e-01", "alice", 10.0)
        assert m.info["instruction"] == "pick up the cube"
        ticks = start - 0.0005 + np.arange(ep.length + 1) / 10  # the start marker, then 10 Hz
        np.testing.assert_allclose(ep.timestamp, ticks - ticks[0], atol=1e-6)
        assert ep.length == 20
        # joints at 50 Hz: the last sample at or before each tick (1 ms tolerance), 3 of 4
        # joints picked by name
        k = np.floor((ticks + 0.001) * 50 + 1e-9)
        np.testing.assert_array_equal(ep.obs["joint_pos"], np.stack([k, 2 * k, 3 * k], 1))
        np.testing.assert_allclose(ep.extras["ts_obs_joint_pos"], T0 + k / 50)
        # pose at 20 Hz (+1 ms), as x y z qx qy qz qw
        kp = np.floor((ticks - 0.001 + 0.001) * 20 + 1e-9)
        np.testing.assert_array_equal(ep.obs["ee_pose"][:, 0], kp)
        np.testing.assert_array_equal(ep.obs["ee_pose"][0, 1:], [0, 1, 0, 0, 0, 1])
        # raw camera at 10 Hz (+2 ms: after each tick, so the frame before it is used)
        kf = np.floor((ticks - 0.002 + 0.001) * 10 + 1e-9).astype(int)
        assert [fx.frame_index(f) for f in ep.images["front"]] == list(kf % fx.PERIOD)
        # JPEG camera at 5 Hz: each frame serves two ticks
        kw = np.floor((ticks - 0.004 + 0.001) * 5 + 1e-9).astype(int)
        assert [fx.frame_index(f) for f in ep.images["wrist"]] == list(kw % fx.PERIOD)
        # action at 10 Hz (+3 ms): T actions; the one at the last tick goes to info
        ka = np.floor((ticks - 0.003 + 0.001) * 10 + 1e-9)
        np.testing.assert_array_equal(ep.action, np.stack([ka, -ka], 1)[:-1])
        assert ep.meta.info["final_action"] == [ka[-1], -ka[-1]]
        assert ep.images["front"].shape == (21, fx.H, fx.W, 3)


def test_one_dropped_frame_is_flagged_three_are_refused(tmp_path, corpus, mapping):
    fx.ros_bag(tmp_path / "one.mcap", drop_front={12})  # inside episode 0 (0.5 .. 2.5 s)
    rep = ingest([tmp_path / "one.mcap"], corpus, IngestConfig(mapping=mapping))
    assert len(rep.accepted) == 2 and rep.quarantined == []
    (flag,) = rep.flagged
    assert flag["source"].endswith("one.mcap#0")
    assert "/cam/front: 1 of 21 ticks (4.8%)" in flag["flags"][0]
    meta = corpus.metadata(flag["episode_id"])["info"]["alignment"]
    assert meta["flagged"] and meta["streams"]["images/front"]["drops"] == 1

    fx.ros_bag(tmp_path / "three.mcap", drop_front={12, 13, 14})
    rep = ingest([tmp_path / "three.mcap"], corpus, IngestConfig(mapping=mapping))
    assert len(rep.accepted) == 1  # episode 1 is fine
    (q,) = rep.quarantined
    assert q["field"] == "/cam/front" and "too stale: 3 of 21 ticks" in q["reason"]


def test_crashed_bag_without_footer_is_read_up_to_the_last_whole_message(tmp_path, corpus, mapping):
    from mcap.reader import make_reader

    path = tmp_path / "crash.mcap"
    bag = fx.ros_bag(path, finish=False, chunk_size=1)  # every message in its own chunk
    m = 2 * len(bag.ends) // 3
    cut = bag.ends[m][2] + 7  # seven bytes into the next message's chunk
    with open(path, "r+b") as f:
        f.truncate(cut)
    with open(path, "rb") as f, pytest.raises(Exception):  # noqa: B017  (any error: it fails)
        list(make_reader(f).iter_messages())  # a seeking reader gives up at once
    rep = ingest([path], corpus, IngestConfig(mapping=mapping))
    assert rep.quarantined == [] and len(rep.accepted) == 2
    eps = [corpus.read(e) for e in rep.accepted]
    rec = eps[1].meta.info["recovered"]
    assert rec["messages"] == m + 1  # every message before the cut, none after
    assert eps[1].meta.info["note"] == "no end marker (recording stopped)"
    last_joint = max(t for topic, t, _ in bag.ends[: m + 1] if topic == "/joint_states")
    assert eps[1].extras["ts_obs_joint_pos"][-1] <= last_joint
    assert last_joint - eps[1].extras["ts_obs_joint_pos"][-1] < 0.1  # reaches the cut
    assert eps[1].meta.success is None and eps[1].truncated[-1]


def test_header_stamps_going_backwards_are_refused_unless_log_time_is_used(tmp_path, corpus):
    bag = fx.Bag(tmp_path / "b.mcap")
    for k in range(40):
        t = T0 + k / 20
        stamp = t - 0.2 if k == 20 else t  # the sensor's clock jumped back; log time did not
        bag.joints("/joint_states", stamp, [k, k, k], log=t)
        bag.joints("/arm/command", t, [k, -k])
    bag.finish()
    toml = "control_hz = 10.0\n[obs.q]\ntopic = '/joint_states'\n[action]\ntopic = '/arm/command'\n"
    (tmp_path / "m.toml").write_text(toml)
    rep = ingest([tmp_path / "b.mcap"], corpus, IngestConfig(mapping=tmp_path / "m.toml"))
    (q,) = rep.quarantined
    assert q["field"] == "/joint_states" and "timestamps go backwards at sample 20" in q["reason"]
    (tmp_path / "log.toml").write_text("time = 'log'\n" + toml)
    rep = ingest([tmp_path / "b.mcap"], corpus, IngestConfig(mapping=tmp_path / "log.toml"))
    assert len(rep.accepted) == 1 and rep.quarantined == []


def test_yaml_mapping_reads_like_toml(tmp_path):
    yml = tmp_path / "map.yaml"
    yml.write_text(
        "control_hz: 15\nobs:\n  joint_pos:\n    topic: /joint_states\n    joints: [a, b]\n"
        "images:\n  front: /cam\naction:\n  topic: /cmd\n  latency_s: 0.02\nepisodes: /episode\n"
    )
    m = load_mapping(yml)
    assert m.control_hz == 15.0 and m.obs["joint_pos"].joints == ("a", "b")
    assert m.images["front"].topic == "/cam" and m.action.latency_s == 0.02
    assert m.episode_topic == "/episode"


@pytest.mark.parametrize(
    "text,match",
    [
        ("[action]\ntopic='/a'\n[obs.q]\ntopic='/q'\n", "control_hz"),
        ("control_hz=10\n[obs.q]\ntopic='/q'\n", r"\[action\]"),
        ("control_hz=10\n[action]\ntopic='/a'\n[obs.q]\ntopic='/q'\nfeild='x'\n", "unknown key"),
        ("control_hz=10\n[action]\ntopic='/a'\n[obs.'joint pos']\ntopic='/q'\n", "letters"),
        ("control_hz=10\n[action]\ntopic='/a'\n", "at least one observation"),
        ("control_hz = [", "not valid toml"),
    ],
)
def test_mapping_errors_name_the_key(tmp_path, text, match):
    p = tmp_path / "m.toml"
    p.write_text(text)
    with pytest.raises(MappingError, match=match):
        load_mapping(p)


def test_bag_without_mapping_is_quarantined_not_guessed(tmp_path, corpus):
    fx.ros_bag(tmp_path / "run.mcap")
    rep = ingest([tmp_path / "run.mcap"], corpus)
    (q,) = rep.quarantined
    assert q["field"] == "--mapping" and "needs a mapping file" in q["reason"]
