"""Bad input is refused before anything is written, with the episode, key and reason named."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import zarr

from flywheel.corpus import BadEpisodeError, Corpus, SchemaVersionError
from flywheel.corpus.layout import ROOT_ATTR
from flywheel.corpus.synthetic import synthetic_episode


def _nothing_written(c: Corpus, before: int) -> None:
    assert len(c.entries()) == before
    assert os.listdir(c.layout.staging) == []
    assert len(os.listdir(c.layout.episodes)) == before + 1  # + the group's zarr.json


def _bad(kind: str):
    ep = synthetic_episode(0, length=10)
    if kind == "wrong_dtype":
        ep.action = ep.action.astype(str)
        return ep, "action", "wrong dtype"
    if kind == "mismatched_length":
        ep.reward = ep.reward[:-1]
        return ep, "reward", "length 9"
    if kind == "obs_length":
        ep.obs["ee_pos"] = ep.obs["ee_pos"][:-1]
        return ep, "obs/ee_pos", "length 10"
    if kind == "nan":
        ep.obs["joint_pos"][3, 2] = np.nan
        return ep, "obs/joint_pos", "NaN or inf at index (3, 2)"
    if kind == "inf":
        ep.action[1, 0] = np.inf
        return ep, "action", "NaN or inf"
    if kind == "missing_core":
        ep.terminated = None
        return ep, "terminated", "missing"
    if kind == "no_obs":
        ep.obs, ep.images = {}, {}
        return ep, "obs", "missing"
    if kind == "schema_version":
        ep.schema_version = "2.0.0"
        return ep, "schema_version", "schema version 2.0.0"
    if kind == "escape_key":
        ep.obs["../../etc"] = ep.obs.pop("goal")
        return ep, "obs/../../etc", "not allowed"
    if kind == "escape_camera":
        ep.images["/abs"] = np.zeros((11, 8, 8, 3), np.uint8)
        return ep, "images//abs", "not allowed"
    if kind == "escape_task":
        ep.meta = dataclasses.replace(ep.meta, task="../x")
        return ep, "meta.task", "not allowed"
    if kind == "zero_length":
        ep.action, ep.reward = ep.action[:0], ep.reward[:0]
        ep.terminated, ep.truncated = ep.terminated[:0], ep.truncated[:0]
        return ep, "action", "zero-length"
    if kind == "time_backwards":
        ep.timestamp[5] = ep.timestamp[3]
        return ep, "timestamp", "not strictly increasing"
    if kind == "image_dtype":
        ep.images["front"] = np.zeros((11, 8, 8, 3), np.float32)
        return ep, "images/front", "wrong dtype"
    if kind == "bad_source":
        ep.meta = dataclasses.replace(ep.meta, source="simulated")
        return ep, "meta.source", "not one of"
    raise AssertionError(kind)


KINDS = [
    "wrong_dtype", "mismatched_length", "obs_length", "nan", "inf", "missing_core", "no_obs",
    "schema_version", "escape_key", "escape_camera", "escape_task", "zero_length",
    "time_backwards", "image_dtype", "bad_source",
]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_bad_episode_is_refused_and_nothing_is_written(corpus, kind):
    corpus.append(synthetic_episode(100, length=5))
    ep, key, reason = _bad(kind)
    with pytest.raises(BadEpisodeError) as err:
        corpus.append(ep)
    assert err.value.key == key
    assert reason in err.value.reason
    assert err.value.episode.endswith("(0)")  # names the episode (by its seed here)
    assert key in str(err.value)
    _nothing_written(corpus, 1)


def test_spec_mismatch_and_missing_task_key_are_refused(corpus):
    corpus.append(synthetic_episode(0, length=5))
    ep = synthetic_episode(1, length=5)
    ep.obs["ee_pos"] = ep.obs["ee_pos"].astype(np.float64)
    with pytest.raises(BadEpisodeError, match="does not match the corpus spec") as e:
        corpus.append(ep)
    assert e.value.key == "obs/ee_pos"
    ep = synthetic_episode(2, length=5)
    del ep.obs["goal"]
    with pytest.raises(BadEpisodeError, match="missing") as e:
        corpus.append(ep)
    assert e.value.key == "obs/goal"
    _nothing_written(corpus, 1)


def test_bad_episode_goes_to_quarantine_with_its_reason(corpus):
    ep, key, _ = _bad("nan")
    rec = corpus.append_or_quarantine(ep, source="recorder/run7.npz")
    assert rec.key == key and rec.source == "recorder/run7.npz"
    listed = corpus.quarantine.list()
    assert [r.id for r in listed] == [rec.id]
    saved = np.load(rec.copy)
    assert np.isnan(saved["obs__joint_pos"][3, 2])
    assert corpus.info()["quarantined"] == 1 and corpus.info()["episodes"] == 0


def test_reader_refuses_unknown_major_schema_version(corpus):
    root = zarr.open_group(corpus.path, mode="r+")
    meta = dict(root.attrs[ROOT_ATTR])
    meta["schema_version"] = "2.1.0"
    root.attrs[ROOT_ATTR] = meta
    with pytest.raises(SchemaVersionError, match=r"schema version 2\.1\.0.*reads 1\.x\.x"):
        Corpus(corpus.path)
    meta["schema_version"] = "1.7.3"  # a newer minor of our major is readable
    root.attrs[ROOT_ATTR] = meta
    assert Corpus(corpus.path).schema_version == "1.7.3"


def test_open_refuses_a_folder_that_is_not_a_corpus(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    with pytest.raises(Exception, match="not a flywheel corpus"):
        Corpus(tmp_path / "x")
