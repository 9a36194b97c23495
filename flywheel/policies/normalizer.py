"""Observation normalisation from corpus statistics, frozen into the policy.

The statistics come from the snapshot's merged per-episode statistics, so every training run on
the same snapshot normalises identically, and a deployed policy carries its own normaliser
(online refinement keeps it frozen: a moving normaliser shifts the inputs the critic and actor
were trained on).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from flywheel.corpus.stats import KeyStats
from flywheel.policies.limits import CLIP

MIN_STD = 1e-3
"""Floor on a dimension's std: constant dimensions (a fixed goal) must not blow up."""


class Normalizer(nn.Module):
    """Per-key (x - mean) / std with frozen buffers; keys in a fixed order.

    The per-key buffers are what a bundle stores. `flat` normalises all keys in one go on their
    concatenation: key by key costs four small ops per key per network pass, a sizeable share of
    a low-dim update on one CPU thread.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.keys = list(shapes)
        for k, shape in shapes.items():
            self.register_buffer(f"mean_{k}", torch.zeros(shape))
            self.register_buffer(f"std_{k}", torch.ones(shape))

    @classmethod
    def from_stats(
        cls, shapes: Mapping[str, tuple[int, ...]], stats: Mapping[str, KeyStats]
    ) -> Normalizer:
        """Build from corpus statistics keyed `obs/<key>`."""
        n = cls(shapes)
        for k in shapes:
            s = stats[f"obs/{k}"]
            getattr(n, f"mean_{k}").copy_(torch.as_tensor(s.mean, dtype=torch.float32))
            std = np.maximum(s.std, MIN_STD)
            getattr(n, f"std_{k}").copy_(torch.as_tensor(std, dtype=torch.float32))
        return n

    def forward(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            k: ((obs[k] - getattr(self, f"mean_{k}")) / getattr(self, f"std_{k}")).clamp(
                -CLIP, CLIP
            )
            for k in self.keys
        }

    def flat(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, sum D_k): the keys flattened and concatenated in order, then normalised; equal to
        concatenating `forward`'s outputs."""
        x = torch.cat([obs[k].flatten(1) for k in self.keys], dim=-1)
        mean, std = self.flat_stats()
        return ((x - mean) / std).clamp(-CLIP, CLIP)

    def flat_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The buffers concatenated in key order, cached until one of them changes (in-place
        edits bump a tensor's version; `.to()` and loading give new tensors)."""
        bufs = [getattr(self, f"{s}_{k}") for s in ("mean", "std") for k in self.keys]
        if torch.compiler.is_compiling():  # traced once: no cache needed
            return torch.cat([b.flatten() for b in bufs[: len(self.keys)]]), torch.cat([b.flatten() for b in bufs[len(self.keys) :]])  # fmt: skip
        versions = [b._version for b in bufs]
        cached = self.__dict__.get("_flat_cache")  # (buffers, versions, mean, std)
        if (
            cached is None
            or cached[1] != versions
            or any(a is not b for a, b in zip(cached[0], bufs, strict=True))
        ):
            n = len(self.keys)
            cached = (bufs, versions, torch.cat([b.flatten() for b in bufs[:n]]), torch.cat([b.flatten() for b in bufs[n:]]))  # fmt: skip
            self.__dict__["_flat_cache"] = cached
        return cached[2], cached[3]

    def fingerprint(self) -> str:
        """Hash of the normaliser's values: a deployed client checks it against the server's."""
        import hashlib

        h = hashlib.sha256()
        for name, buf in sorted(self.state_dict().items()):
            h.update(name.encode() + buf.detach().cpu().numpy().astype("<f4").tobytes())
        return "sha256:" + h.hexdigest()
