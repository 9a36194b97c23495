"""Versions prepared in a helper process: same actions as loaded in process, same refusals."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from flywheel.deploy.deployed import load_policy
from flywheel.deploy.export import PARITY_TOL, ExportError
from flywheel.deploy.observations import synthetic
from flywheel.deploy.prepare import (
    PrepareError,
    Preparer,
    Request,
    fifo_priority,
    open_prepared,
    prepare,
)
from flywheel.deploy.runners import EagerRunner
from flywheel.home import flywheel_home
from flywheel.policies import BundleError
from tests.deploy.conftest import toy_bundle


@pytest.fixture(scope="module")
def preparer():
    """One helper process for the module: starting one (spawn, import torch) takes seconds."""
    with Preparer(nice=0) as p:
        yield p


def _two_versions(tmp_path, registry):
    for seed in (1, 2):
        registry.register(toy_bundle(tmp_path / f"b{seed}", seed=seed, hidden=(32, 32)))


def _flip_last_byte(path):
    path.chmod(0o644)  # registry copies are read-only
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _request(registry, ref) -> Request:
    return Request(
        ref=ref,
        registry_root=registry.root.resolve(),
        backend="onnx",
        observations=None,
        home=flywheel_home().resolve(),
    )


def test_a_version_prepared_in_the_helper_serves_the_same_actions(tmp_path, registry, preparer):
    _two_versions(tmp_path, registry)
    here = load_policy(2, registry=registry, backend="onnx")
    there = preparer.load(2, registry=registry, backend="onnx")
    assert preparer.helper_pid() != os.getpid()
    assert there.bundle is None  # its PyTorch actor was built in the helper only
    assert there.info() == here.info() and there.name == "v2"
    obs = synthetic(here.schema, json.loads((here.card.path / "normalizer.json").read_text()), 64)
    want = EagerRunner(here.bundle.actor).batch(obs)  # the reference: the PyTorch actor
    assert np.abs(want).max() > 0.5  # not a vacuous comparison of zeros
    assert np.max(np.abs(there.runner.batch(obs) - want)) <= PARITY_TOL
    one = {k: v[3] for k, v in obs.items()}
    assert np.max(np.abs(there.runner(one) - want[3])) <= PARITY_TOL
    np.testing.assert_array_equal(there.low, here.low)


def test_the_helper_refuses_a_tampered_bundle(tmp_path, registry, preparer):
    _two_versions(tmp_path, registry)
    _flip_last_byte(registry.bundle_path(2) / "weights.safetensors")
    with pytest.raises(BundleError, match=r"weights\.safetensors: content hash mismatch"):
        preparer.load(2, registry=registry)
    assert preparer.load(1, registry=registry).name == "v1"  # the helper goes on


def test_files_changed_after_preparation_are_refused_when_opened(tmp_path, registry):
    _two_versions(tmp_path, registry)
    p1 = prepare(_request(registry, 1))  # the helper's side, run here
    p2 = prepare(_request(registry, 2))
    assert p1.parity["passed"] and p1.export_file.is_file()
    assert open_prepared(p1, warmup=1).name == "v1"
    _flip_last_byte(registry.bundle_path(1) / "schema.json")
    with pytest.raises(BundleError, match=r"schema\.json: content hash mismatch"):
        open_prepared(p1)
    onnx = p2.export_file  # not the file that passed parity in the helper any more
    onnx.write_bytes(onnx.read_bytes().replace(b"action", b"actioN"))
    with pytest.raises(ExportError, match="content hash mismatch"):
        open_prepared(p2)


def test_a_dead_or_hung_helper_is_replaced(tmp_path, registry):
    _two_versions(tmp_path, registry)
    with Preparer(nice=0) as p:
        first = p.helper_pid()
        os.kill(first, signal.SIGKILL)
        while p._proc is not None and p._proc.is_alive():
            time.sleep(0.01)
        assert p.load(1, registry=registry).name == "v1"  # on a fresh helper
        second = p.helper_pid()
        assert second != first
        p.timeout_s = 0.001
        with pytest.raises(PrepareError, match=r"took over 0\.001 s"):
            p.load(2, registry=registry)
        p.timeout_s = 60.0
        assert p.load(2, registry=registry).name == "v2" and p.helper_pid() != second


def test_fifo_priority_is_restored_after_the_block():
    before = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
    with fifo_priority(None) as on:
        assert not on
    with fifo_priority(1) as on:  # False where not permitted (no CAP_SYS_NICE): then a no-op
        assert (os.sched_getscheduler(0) == os.SCHED_FIFO) == on
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
