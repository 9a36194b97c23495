"""Multi-rate alignment with known drops: last sample at or before each tick, staleness, flags."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.ingest import AlignmentConfig, IngestError, Stream, align, control_grid


def _stream(key: str, times, **kw) -> Stream:
    times = np.asarray(times, dtype=np.float64)
    return Stream(
        key=key, field=key, file="rec.npz", times=times, values=np.arange(len(times)), **kw
    )


GRID = control_grid(0.0, 2.0, 10.0)  # 21 ticks, 0.0 .. 2.0


def test_control_grid_includes_both_ends():
    assert len(GRID) == 21
    assert GRID[0] == 0.0 and GRID[-1] == pytest.approx(2.0)
    assert len(control_grid(0.0, 1.999, 10.0)) == 20  # a tick past the end is not made up


def test_camera_at_30hz_with_six_dropped_frames_is_flagged_not_refused():
    kept = [k for k in range(61) if not 30 <= k <= 35]  # 1.000 .. 1.167 s missing
    cam = _stream("images/front", np.array(kept) / 30)
    al = align([cam], GRID, AlignmentConfig(), control_hz=10.0)
    a = al.streams["images/front"]
    used = np.array(kept)[a.index]  # which source frame each tick shows
    # every tick shows the last frame at or before it: frame floor(3 * tick) ...
    want = np.floor(GRID * 30 + 1e-6).astype(int)
    # ... except where it was dropped: ticks 1.0 and 1.1 fall back to frame 29
    want[10] = want[11] = 29
    np.testing.assert_array_equal(used, want)
    np.testing.assert_allclose(a.staleness[11], 1.1 - 29 / 30)
    assert a.period_s == pytest.approx(0.1)  # the longer of 1/30 s and the control period
    assert a.stale_ticks == 1  # only 1.1 s is more than one period old (133 ms)
    assert a.drops == 6
    assert al.flags and "1 of 21 ticks" in al.flags[0]  # 4.8 % > 2 %: flagged
    np.testing.assert_allclose(a.source_time, np.array(kept)[a.index] / 30)


def test_joint_stream_with_a_300ms_hole_is_refused_and_names_the_field():
    kept = [k for k in range(201) if not 50 <= k <= 79]  # 100 Hz, 0.50 .. 0.79 s missing
    joints = _stream("obs/joint_pos", np.array(kept) / 100)
    with pytest.raises(IngestError) as e:
        align([joints], GRID, AlignmentConfig(), control_hz=10.0)
    assert e.value.field == "obs/joint_pos" and e.value.file == "rec.npz"
    assert "too stale" in e.value.problem and "2 of 21 ticks" in e.value.problem
    # with a laxer limit the same stream is kept and flagged, with the same counts
    al = align([joints], GRID, AlignmentConfig(reject_stale_fraction=0.2), control_hz=10.0)
    a = al.streams["obs/joint_pos"]
    assert a.stale_ticks == 2 and a.drops == 30
    np.testing.assert_allclose(a.staleness[[5, 6, 7]], [0.01, 0.11, 0.21], atol=1e-9)


def test_two_streams_at_different_rates_land_on_one_grid():
    cam = _stream("images/front", np.arange(-1, 61) / 30 + 0.004)  # frames 4 ms after ticks
    joints = _stream("obs/q", np.arange(201) / 100)
    al = align([cam, joints], GRID, AlignmentConfig(), control_hz=10.0)
    assert al.flags == []
    np.testing.assert_array_equal(al.streams["obs/q"].index, np.arange(21) * 10)
    # a frame 4 ms after a tick is not "at" it (tolerance 1 ms): the one before it is used
    # (array index 3j holds frame 3j - 1, stamped 29.3 ms before tick j)
    np.testing.assert_array_equal(al.streams["images/front"].index, np.arange(21) * 3)
    np.testing.assert_allclose(al.streams["images/front"].staleness, 1 / 30 - 0.004)


def test_latency_offset_moves_a_stream_back_in_time():
    cam = _stream("images/front", np.arange(61) / 30 + 0.05)  # stamped 50 ms after capture
    late = align([cam], GRID[1:], AlignmentConfig(), control_hz=10.0).streams["images/front"]
    fixed = align(
        [cam], GRID[1:], AlignmentConfig(latency_s={"images/front": 0.05}), control_hz=10.0
    ).streams["images/front"]
    np.testing.assert_array_equal(fixed.index, np.arange(1, 21) * 3)
    np.testing.assert_array_equal(late.index, np.arange(1, 21) * 3 - 2)
    assert fixed.latency_s == 0.05 and np.allclose(fixed.staleness, 0, atol=1e-9)


def test_ticks_before_a_streams_first_sample_count_as_stale():
    cam = _stream("images/front", np.arange(5, 61) / 30)  # starts at 0.167 s
    al = align([cam], GRID, AlignmentConfig(reject_stale_fraction=0.5), control_hz=10.0)
    a = al.streams["images/front"]
    assert a.stale_ticks == 2  # ticks 0.0 and 0.1 have no frame yet
    assert (a.staleness[:2] < 0).all() and (a.index[:2] == 0).all()


def test_timestamps_going_backwards_are_refused_with_the_sample_index():
    t = np.arange(30) / 10
    t[12] = t[10]  # a reordered message
    with pytest.raises(IngestError, match=r"timestamps go backwards at sample 12 "):
        align([_stream("obs/q", t)], GRID, AlignmentConfig(), control_hz=10.0)


def test_config_is_validated():
    with pytest.raises(ValueError, match="flag_stale_fraction"):
        AlignmentConfig(flag_stale_fraction=0.1, reject_stale_fraction=0.05)
