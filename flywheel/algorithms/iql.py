"""IQL critic: policy *evaluation* of the data's behaviour, fitted once per corpus snapshot.

Implicit Q-Learning (Kostrikov et al., 2022) never queries actions outside the data: V is an
upper expectile of Q over dataset actions, and Q regresses on r + gamma * V(s'). The multi-step
stage freezes this critic and uses A = min(Q1, Q2)(s, a) - V(s) as its advantage (Uni-O4).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from flywheel.algorithms.base import (
    Batch,
    DataKind,
    UpdateSchedule,
    absorbing_reward,
    scalars,
    soft_update,
)
from flywheel.algorithms.optim import Metrics, adam_step
from flywheel.policies import DoubleQ, Normalizer, PolicySpec, ValueNet


@dataclass(frozen=True, kw_only=True)
class IQLConfig:
    """IQL critic settings (Uni-O4 / RL-100 values by default)."""

    expectile: float = 0.7
    """tau of the expectile loss: 0.5 is SARSA's mean, towards 1 the best in-data action."""
    discount: float = 0.99
    """gamma."""
    lr: float = 3e-4
    """Adam learning rate for Q and V."""
    target_tau: float = 0.005
    """Polyak rate of the target Q."""
    layer_norm: bool = True
    """LayerNorm in critics (stabilises off-policy regression)."""
    absorbing_terminal: bool = True
    """A terminated step is a success that keeps paying (see `absorbing_reward`)."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.expectile < 1 or not 0 < self.discount <= 1:
            raise ValueError("expectile in [0.5, 1) and discount in (0, 1]")


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric L2: weight `expectile` on positive diffs (Q above V), 1 - expectile below."""
    weight = torch.where(diff > 0, expectile, 1 - expectile)
    return (weight * diff.pow(2)).mean()


def v_loss(q_target_min: torch.Tensor, v: torch.Tensor, expectile: float) -> torch.Tensor:
    """V(s) <- upper expectile of min Q_target(s, a) over dataset actions."""
    return expectile_loss(q_target_min - v, expectile)


def q_loss(
    q: torch.Tensor, reward: torch.Tensor, done: torch.Tensor, v_next: torch.Tensor, discount: float
) -> torch.Tensor:
    """Q(s, a) <- r + gamma (1 - done) V(s'); q is (2, B) from the double head."""
    target = reward + discount * (1.0 - done) * v_next
    return (q - target.detach().unsqueeze(0)).pow(2).mean()


class IQLCritic:
    """Fits Q and V on a fixed dataset; `advantage(obs, action)` for the improvement step."""

    name = "iql"
    schedule = UpdateSchedule.ONE_STEP  # evaluated once per snapshot, then frozen
    data = DataKind.OFFLINE

    def __init__(
        self,
        spec: PolicySpec,
        normalizer: Normalizer,
        config: IQLConfig | None = None,
        *,
        compile: bool = False,
    ) -> None:
        self.config = cfg = config or IQLConfig()
        self.q = DoubleQ(spec, normalizer, layer_norm=cfg.layer_norm)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = ValueNet(spec, normalizer, layer_norm=cfg.layer_norm)
        # one step over both: Q and V share no parameters, so the summed loss gives each exactly
        # its own gradient, with one backward pass and one Adam step
        self.step = adam_step(self.losses, [self.q, self.v], cfg.lr, compile=compile, after=self.average_target)  # fmt: skip

    def losses(self, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """V loss + Q loss; V(s') is taken before this step's update (as in CORL)."""
        cfg = self.config
        obs, act = batch["obs"], batch["action"]
        with torch.no_grad():
            q_t = self.q_target(obs, act).min(0).values
            v_next = self.v(batch["next_obs"])
        lv = v_loss(q_t, self.v(obs), cfg.expectile)
        q = self.q(obs, act)
        reward = absorbing_reward(batch["reward"], batch["done"], cfg.discount, enabled=cfg.absorbing_terminal)  # fmt: skip
        lq = q_loss(q, reward, batch["done"], v_next, cfg.discount)
        return lv + lq, {"v_loss": lv, "q_loss": lq, "q_mean": q.detach().mean()}

    def average_target(self) -> None:
        soft_update(self.q_target, self.q, self.config.target_tau)

    def update(self, batch: Batch) -> dict[str, float]:
        return scalars(self.step(batch)[1])

    @torch.no_grad()
    def advantage(self, obs: Mapping[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        """(B,) A(s, a) = min Q_target(s, a) - V(s), from the frozen critic."""
        return self.q_target(obs, action).min(0).values - self.v(obs)

    @torch.no_grad()
    def q_value(self, obs: Mapping[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        return self.q_target(obs, action).min(0).values

    def state_dict(self) -> dict[str, Any]:
        return {
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "v": self.v.state_dict(),
            "opt": self.step.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for k in ("q", "q_target", "v"):
            getattr(self, k).load_state_dict(state[k])
        self.step.load_state_dict(state["opt"])

    def config_json(self) -> dict[str, Any]:
        return asdict(self.config)


def freeze(module: nn.Module) -> nn.Module:
    """Evaluation mode, no gradients: the critic is fixed during improvement."""
    return module.eval().requires_grad_(False)
