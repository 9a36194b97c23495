"""Policies: networks, the frozen observation normaliser, bundles, and the numpy runner."""

from flywheel.policies.bundle import Bundle, BundleError, load_bundle, save_bundle, verify_files
from flywheel.policies.networks import DoubleQ, GaussianActor, PolicySpec, ValueNet
from flywheel.policies.normalizer import Normalizer
from flywheel.policies.policy import NumpyPolicy

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
