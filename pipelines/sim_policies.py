"""Let sim collection drive a trained policy bundle (the learning side registers it here).

`sim` knows nothing of policy bundles and `flywheel` knows nothing of `sim`: this module, in the
layer that ties them together, adapts a bundle to sim's batched-policy protocol.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flywheel.policies import NumpyPolicy, load_bundle


class BundlePolicy:
    """A bundle's deterministic actor as a sim `BatchPolicy`."""

    def __init__(self, path: Path, version: str) -> None:
        self.policy = NumpyPolicy(load_bundle(path, with_value=False).actor)
        self.version = version

    def reset(self, index: int, seed: int | None = None) -> None:
        """Stateless policy: nothing to reset."""

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.policy(obs)


def version_name(path: str | Path) -> str:
    """How episodes name the policy that produced them: `<task>-v0003` for a registry version
    (`registry/<task>/versions/v0003/bundle`), else the bundle folder's name."""
    p = Path(path)
    if p.name == "bundle" and p.parent.parent.name == "versions":
        return f"{p.parent.parent.parent.name}-{p.parent.name}"
    return p.name


def register_bundle_policy(path: str | Path, version: str | None = None) -> str:
    """Make `path` collectable as `sim.collect.collect(policy=<name>)`; returns the name.

    Registration is per process: collect with workers=1 (or register in each worker).
    """
    from sim.collect import POLICY_LOADERS

    path = Path(path)
    name = version or version_name(path)
    POLICY_LOADERS[name] = lambda *, task, num_envs, noise, seed: BundlePolicy(path, name)
    return name
