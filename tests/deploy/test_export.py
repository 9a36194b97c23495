"""Exports: ONNX and TorchScript at parity with the eager actor, and refused when they are not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flywheel.deploy import export as export_mod
from flywheel.deploy.deployed import load_policy
from flywheel.deploy.export import PARITY_TOL, ExportError, export_bundle, load_export
from flywheel.deploy.observations import load_batch, synthetic
from flywheel.deploy.runners import EagerRunner
from flywheel.policies import NumpyPolicy, load_bundle
from tests.deploy.conftest import toy_bundle


def _obs(bundle, n=200):
    return synthetic(bundle.schema, json.loads((bundle.path / "normalizer.json").read_text()), n)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("cameras", [None, {"wrist": (24, 24, 3)}])
def test_export_is_at_parity_on_recorded_observations(tmp_path, fmt, cameras):
    b = load_bundle(toy_bundle(tmp_path / "b", hidden=(64, 64), cameras=cameras))
    obs = _obs(b)
    doc = export_bundle(b, fmt, tmp_path / fmt, obs)
    assert doc["parity"]["passed"] and doc["parity"]["max_abs_diff"] <= PARITY_TOL
    assert doc["parity"]["observations"] == 200 and doc["bundle_hash"] == b.content_hash
    runner = load_export(b, fmt, tmp_path / fmt)
    ref = NumpyPolicy(b.actor)(obs)  # the policy as evaluated and trained
    got = runner.batch(obs)
    assert np.abs(ref).max() > 0.5  # actions are not all ~0 (a vacuous comparison)
    assert np.max(np.abs(ref - got)) <= PARITY_TOL
    one = {k: v[7] for k, v in obs.items()}
    assert np.max(np.abs(runner(one) - ref[7])) <= PARITY_TOL
    stored = load_batch(tmp_path / fmt / "observations.npz")
    assert set(stored) == set(obs) and len(stored["a"]) == 200


def test_export_not_at_parity_is_refused_and_not_written(tmp_path, monkeypatch):
    b = load_bundle(toy_bundle(tmp_path / "b"))
    other = load_bundle(toy_bundle(tmp_path / "other", seed=5))
    real = export_mod.graph_bytes
    monkeypatch.setattr(export_mod, "graph_bytes", lambda bundle, fmt: real(other, fmt))
    with pytest.raises(ExportError, match="exceeds 1e-05; not exported"):
        export_bundle(b, "onnx", tmp_path / "onnx", _obs(b))
    assert not (tmp_path / "onnx").exists()


def test_tampered_or_foreign_exports_are_refused_on_load(tmp_path):
    b = load_bundle(toy_bundle(tmp_path / "b"))
    other = load_bundle(toy_bundle(tmp_path / "other", seed=5))
    export_bundle(b, "onnx", tmp_path / "onnx", _obs(b))
    with pytest.raises(ExportError, match="exported from bundle"):
        load_export(other, "onnx", tmp_path / "onnx")
    with pytest.raises(ExportError, match="format 'onnx', wanted 'torchscript'"):
        load_export(b, "torchscript", tmp_path / "onnx")
    f = tmp_path / "onnx" / "policy.onnx"
    f.write_bytes(f.read_bytes().replace(b"action", b"actioN"))
    with pytest.raises(ExportError, match="content hash mismatch"):
        load_export(b, "onnx", tmp_path / "onnx")


def test_export_swapped_for_another_models_graph_fails_parity_on_load(tmp_path):
    b = load_bundle(toy_bundle(tmp_path / "b"))
    other = load_bundle(toy_bundle(tmp_path / "other", seed=5))
    export_bundle(b, "onnx", tmp_path / "onnx", _obs(b))
    export_bundle(other, "onnx", tmp_path / "o2", _obs(other))
    d = json.loads((tmp_path / "o2" / "export.json").read_text())
    (tmp_path / "onnx" / "policy.onnx").write_bytes((tmp_path / "o2" / "policy.onnx").read_bytes())
    doc = json.loads((tmp_path / "onnx" / "export.json").read_text())
    doc["sha256"] = d["sha256"]  # someone "fixed" the hash too: parity still catches it
    (tmp_path / "onnx" / "export.json").write_text(json.dumps(doc))
    with pytest.raises(ExportError, match="parity check failed on load"):
        load_export(b, "onnx", tmp_path / "onnx")


@pytest.mark.parametrize("backend", ["eager", "torchscript", "onnx"])
def test_load_policy_from_a_registry_version_exports_once(tmp_path, registry, backend):
    registry.register(toy_bundle(tmp_path / "b"))
    p = load_policy("candidate", registry=registry, backend=backend)
    assert p.version == 1 and p.name == "v1" and p.backend == backend
    obs = {"a": np.ones(3, np.float32), "b": np.zeros(2, np.float32)}
    ref = EagerRunner(p.bundle.actor)(obs)
    assert np.max(np.abs(p.runner(obs) - ref)) <= PARITY_TOL
    if backend != "eager":
        assert (registry.exports_dir(1) / backend / "export.json").is_file()
    info = p.info()
    assert info["schema_hash"] == registry.record(1).schema_hash and info["chunk_len"] == 1
