"""Fixtures for learning tests: a tiny synthetic corpus and its cache."""

from __future__ import annotations

import pytest
import torch

from flywheel.corpus import Corpus, TrainingCache
from flywheel.corpus.synthetic import synthetic_episode


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def tiny_corpus(tmp_path) -> Corpus:
    c = Corpus.create(tmp_path / "c.zarr")
    for s in range(12):
        c.append(synthetic_episode(s, length=20 + s % 5))
    return c


@pytest.fixture
def tiny_cache(tiny_corpus) -> TrainingCache:
    return TrainingCache.build(tiny_corpus, tiny_corpus.snapshot())
