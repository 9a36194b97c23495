"""Policies: networks, the frozen observation normaliser, bundles, and the numpy runner.

The names below load their module on first use (PEP 562): an env worker process unpickles
NumPy policy snapshots from `flywheel.policies.numpy_forward`, and importing this package must
not make it import torch, about 2 s of a worker's start-up here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOME = {
    "Bundle": "bundle",
    "BundleError": "bundle",
    "load_bundle": "bundle",
    "save_bundle": "bundle",
    "verify_files": "bundle",
    "DoubleQ": "networks",
    "GaussianActor": "networks",
    "PolicySpec": "networks",
    "ValueNet": "networks",
    "Normalizer": "normalizer",
    "NumpyPolicy": "policy",
}

__all__ = [
    "Bundle",
    "BundleError",
    "DoubleQ",
    "GaussianActor",
    "Normalizer",
    "NumpyPolicy",
    "PolicySpec",
    "ValueNet",
    "load_bundle",
    "save_bundle",
    "verify_files",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'flywheel.policies' has no attribute {name!r}")
    return getattr(importlib.import_module(f"flywheel.policies.{_HOME[name]}"), name)


if TYPE_CHECKING:
    from flywheel.policies.bundle import Bundle, BundleError, load_bundle, save_bundle, verify_files
    from flywheel.policies.networks import DoubleQ, GaussianActor, PolicySpec, ValueNet
    from flywheel.policies.normalizer import Normalizer
    from flywheel.policies.policy import NumpyPolicy
