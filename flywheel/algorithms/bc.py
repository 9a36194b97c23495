"""Behaviour cloning: one-step, offline. Evaluate = nothing (trust the data); improve = imitate.

Optionally an ensemble with Uni-O4's diversity term, so the members cover different modes of
the data and the multi-step stage has several starting points to choose from:
    L_i = NLL_i - alpha * (log pi_i(a|s) - max_{j != i} log pi_j(a|s))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from flywheel.algorithms.base import Batch, DataKind, UpdateSchedule, scalars
from flywheel.algorithms.optim import Metrics, adam_step
from flywheel.policies import GaussianActor, Normalizer, PolicySpec


@dataclass(frozen=True, kw_only=True)
class BCConfig:
    """Behaviour cloning settings."""

    lr: float = 1e-3
    """Adam learning rate."""
    ensemble: int = 1
    """Number of members; >1 adds the diversity term."""
    diversity: float = 0.1
    """alpha of the diversity term (Uni-O4: 0.1)."""
    grad_clip: float = 1.0
    """Max gradient norm."""
    weight_decay: float = 1e-4
    """AdamW weight decay: small demonstration sets overfit without it."""

    def __post_init__(self) -> None:
        if self.ensemble < 1 or self.lr <= 0:
            raise ValueError("ensemble >= 1 and lr > 0")


def bc_loss(
    logps: torch.Tensor, weight: torch.Tensor | None = None, diversity: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """logps (M, B) of dataset actions under M members -> loss and metrics.

    With M > 1 each member is also pushed away from the most likely other member on the same
    action (the diversity term); with weights, per-sample importance (success weighting).
    """
    w = torch.ones_like(logps[0]) if weight is None else weight
    nll = -(logps * w).sum(-1) / w.sum().clamp_min(1e-8)  # (M,)
    loss = nll.sum()
    metrics = {"nll": nll.detach().mean()}
    if logps.shape[0] > 1 and diversity > 0:
        masked = logps.unsqueeze(0).expand(len(logps), -1, -1).clone()  # (M, M, B)
        eye = torch.eye(len(logps), dtype=torch.bool, device=logps.device)
        masked[eye] = -torch.inf
        best_other = masked.max(dim=1).values  # (M, B); not detached: pushes the rival down
        div = ((logps - best_other) * w).sum(-1) / w.sum().clamp_min(1e-8)
        loss = loss - diversity * div.sum()
        metrics["diversity"] = div.detach().mean()
    return loss, metrics


class BC:
    """One-step behaviour cloning (an ensemble of Gaussian actors)."""

    name = "bc"
    schedule = UpdateSchedule.ONE_STEP
    data = DataKind.OFFLINE

    def __init__(
        self,
        spec: PolicySpec,
        normalizer: Normalizer,
        config: BCConfig | None = None,
        *,
        compile: bool = False,
    ) -> None:
        self.config = cfg = config or BCConfig()
        self.actors = nn.ModuleList(GaussianActor(spec, normalizer) for _ in range(cfg.ensemble))
        self.step = adam_step(self.losses, [self.actors], cfg.lr, compile=compile, max_norm=cfg.grad_clip, weight_decay=cfg.weight_decay, decoupled=True)  # fmt: skip

    def losses(self, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        logps = torch.stack([a.log_prob(batch["obs"], batch["action"]) for a in self.actors])
        return bc_loss(logps, batch.get("weight"), self.config.diversity)

    def update(self, batch: Batch) -> dict[str, float]:
        loss, metrics = self.step(batch)
        return scalars({"loss": loss, **metrics})

    def best_member(self, batch: Batch) -> GaussianActor:
        """The member with the highest likelihood of held-out data (what to deploy)."""
        with torch.no_grad():
            scores = [float(a.log_prob(batch["obs"], batch["action"]).mean()) for a in self.actors]
        return self.actors[max(range(len(scores)), key=scores.__getitem__)]

    def state_dict(self) -> dict[str, Any]:
        return {"actors": self.actors.state_dict(), "opt": self.step.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.actors.load_state_dict(state["actors"])
        self.step.load_state_dict(state["opt"])

    def config_json(self) -> dict[str, Any]:
        return asdict(self.config)
