"""A policy as a plain function of numpy observations, for evaluation, collection and control.

This is the deployable face of an actor: numpy in, numpy out, no training code imported.
Low-dim actors run as NumPy matmuls (`numpy_forward`: a fraction of torch's per-call overhead
at the small batches of acting); camera actors run through torch behind the same call.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from flywheel.policies.networks import GaussianActor
from flywheel.policies.numpy_forward import NumpyActor


class NumpyPolicy:
    """Wraps an actor: `policy(obs)` for a batch `{key: (B, ...)}` returns actions (B, A)."""

    def __init__(self, actor: GaussianActor, *, deterministic: bool = True, seed: int = 0) -> None:
        self.actor = actor.eval()
        self.forward = NumpyActor(self.actor)
        self.deterministic = deterministic
        self.keys = list(actor.spec.obs_shapes) + list(actor.spec.cameras)
        self.low, self.high = actor.spec.action_low, actor.spec.action_high
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.deterministic:
            a = self.forward.mode(obs)
        else:
            a = self.forward.act(self.forward.sample(obs, self._gen)[0])
        return np.clip(a, self.low, self.high).astype(np.float32, copy=False)

    def single(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One observation (no batch axis) -> one action (A,)."""
        return self({k: np.asarray(obs[k])[None] for k in self.keys})[0]
