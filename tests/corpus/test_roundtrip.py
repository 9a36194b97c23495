"""Round-trips: every key, dtype and shape comes back; images within a PSNR floor or exact."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.corpus import Corpus, CorpusConfig, Episode, EpisodeMeta
from flywheel.corpus.images import psnr
from flywheel.corpus.synthetic import synthetic_episode


def _mixed_episode(T: int = 12) -> Episode:
    rng = np.random.default_rng(1)
    return Episode(
        obs={
            "f32": rng.normal(size=(T + 1, 3)).astype(np.float32),
            "f64": rng.normal(size=(T + 1, 2, 2)),
            "i32": rng.integers(-5, 5, size=(T + 1, 4)).astype(np.int32),
            "u8": rng.integers(0, 255, size=(T + 1, 5)).astype(np.uint8),
            "flag": rng.integers(0, 2, size=(T + 1,)).astype(bool),
            "scalar": rng.normal(size=(T + 1,)).astype(np.float32),
        },
        images={
            "rgb": rng.integers(0, 255, size=(T + 1, 16, 20, 3)).astype(np.uint8),
            "gray": rng.integers(0, 255, size=(T + 1, 16, 16)).astype(np.uint8),
        },
        extras={"state": rng.normal(size=(T + 1, 9))},
        action=rng.uniform(-1, 1, size=(T, 2)).astype(np.float32),
        reward=rng.normal(size=T).astype(np.float32),
        terminated=np.eye(1, T, T - 1, dtype=bool)[0],
        truncated=np.zeros(T, dtype=bool),
        timestamp=np.cumsum(rng.uniform(0.01, 0.1, size=T + 1)),
        meta=EpisodeMeta(
            source="real",
            task="pick_place",
            robot="panda-7",
            control_hz=15.0,
            success=None,
            operator="alice",
            info={"language": "put the cube in the bowl", "cameras": ["rgb", "gray"]},
        ),
    )


def test_every_key_dtype_and_shape_round_trips(tmp_path):
    c = Corpus.create(
        tmp_path / "c.zarr", config=CorpusConfig(image_codecs={"rgb": "png", "gray": "raw"})
    )
    ep = _mixed_episode()
    r = c.append(ep)
    back = c.read(r.episode_id)
    for key, a in ep.arrays().items():
        b = back.arrays()[key]
        assert b.dtype == a.dtype, key
        assert b.shape == a.shape, key
        np.testing.assert_array_equal(b, a, err_msg=key)  # png and raw are lossless
    m = back.meta
    assert (m.source, m.task, m.robot, m.control_hz) == ("real", "pick_place", "panda-7", 15.0)
    assert m.success is None and m.operator == "alice" and m.policy_version is None
    assert m.info == ep.meta.info
    meta = c.metadata(r.episode_id)
    assert meta["length"] == 12 and meta["return"] == pytest.approx(
        float(ep.reward.sum()), rel=1e-6
    )
    assert meta["episode_id"] == r.episode_id and meta["source_hash"].startswith("sha256:")
    assert set(meta["stats"]) == {f"obs/{k}" for k in ep.obs} | {"action", "reward"}


def test_jpeg_images_meet_psnr_floor_and_read_frame_subsets(corpus):
    ep = synthetic_episode(3, length=30, cameras=("front", "wrist"), image_size=96)
    r = corpus.append(ep)
    back = corpus.read(r.episode_id)
    for cam in ("front", "wrist"):
        assert back.images[cam].shape == ep.images[cam].shape
        assert psnr(back.images[cam], ep.images[cam]) > 35.0
    some = corpus.read_arrays(r.episode_id, ["images/front"], frames=[0, 5, 30])["images/front"]
    np.testing.assert_array_equal(some, back.images["front"][[0, 5, 30]])
    assert corpus.spec.get("images/front").codec == "jpeg"


def test_final_observation_is_kept(corpus):
    ep = synthetic_episode(4, length=10)
    back = corpus.read(corpus.append(ep).episode_id)
    assert back.obs["ee_pos"].shape[0] == back.action.shape[0] + 1
    np.testing.assert_array_equal(back.obs["ee_pos"][-1], ep.obs["ee_pos"][-1])


def test_episode_ids_are_sortable_by_creation(corpus):
    ids = [corpus.append(synthetic_episode(s, length=5)).episode_id for s in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [e.episode_id for e in corpus.entries()] == ids
