"""Shared fixtures: tiny corpora in tmp_path, single-threaded numeric libraries."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pytest

from flywheel.corpus import Corpus


@pytest.fixture
def corpus(tmp_path) -> Corpus:
    """An empty corpus in a fresh folder."""
    return Corpus.create(tmp_path / "corpus.zarr")
