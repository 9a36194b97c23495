"""A policy as a plain function of numpy observations, for evaluation, collection and control.

This is the deployable face of an actor: numpy in, numpy out, no training code imported.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from flywheel.policies.networks import GaussianActor


class NumpyPolicy:
    """Wraps an actor: `policy(obs)` for a batch `{key: (B, ...)}` returns actions (B, A)."""

    def __init__(self, actor: GaussianActor, *, deterministic: bool = True, seed: int = 0) -> None:
        self.actor = actor.eval()
        self.deterministic = deterministic
        self.keys = list(actor.spec.obs_shapes) + list(actor.spec.cameras)
        self.low, self.high = actor.spec.action_low, actor.spec.action_high
        self._gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        t = {k: torch.as_tensor(np.asarray(obs[k])) for k in self.keys}
        t = {k: v.float() if v.dtype != torch.uint8 else v for k, v in t.items()}
        if self.deterministic:
            a = self.actor.mode(t)
        else:
            u = self.actor.dist(t).sample(self._gen)
            a = torch.tanh(u) if self.actor.spec.squash else u
        return a.clamp(self.low, self.high).numpy()

    def single(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One observation (no batch axis) -> one action (A,)."""
        return self({k: np.asarray(obs[k])[None] for k in self.keys})[0]
