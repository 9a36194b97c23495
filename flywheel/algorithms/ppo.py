"""PPO for online fine-tuning: iterative, on fresh rollouts of the current policy.

Started from the offline policy and value (Uni-O4's hand-off). What keeps the start of
fine-tuning from destroying the offline policy: a small ratio clip (0.05), a low actor learning
rate, a frozen observation normaliser, and a critic warm-up during which only V learns (the
offline V was fitted to the data's behaviour, not to this policy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from flywheel.algorithms.base import Batch, DataKind, UpdateSchedule, adam, scalars
from flywheel.algorithms.multistep import ppo_clip_loss
from flywheel.policies import GaussianActor, ValueNet
from flywheel.runtime import maybe_compile


@dataclass(frozen=True, kw_only=True)
class PPOConfig:
    """Online PPO settings (Uni-O4 / RL-100 fine-tuning values, sized for a CPU)."""

    num_envs: int = 8
    """Parallel envs per rollout."""
    rollout_steps: int = 128
    """Steps per env per rollout (batch = num_envs * rollout_steps)."""
    epochs: int = 5
    """Passes over each rollout."""
    minibatch: int = 256
    """Minibatch size."""
    actor_lr: float = 3e-5
    """Low: the offline policy is already good; large steps undo it."""
    critic_lr: float = 2e-4
    """Critic learning rate."""
    clip: float = 0.05
    """Small ratio clip (Uni-O4 fine-tuning)."""
    value_clip: float | None = None
    """Clip of the value update around the old prediction (None: off). An absolute clip is on
    the scale of the returns, which here run to hundreds: 0.2 would freeze the critic."""
    entropy: float = 0.0
    """Entropy bonus coefficient."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    critic_warmup: int = 2
    """Rollouts during which only the critic is updated."""
    grad_clip: float = 0.5
    """Max gradient norm."""
    adam_eps: float = 1e-5
    """Adam epsilon (PPO implementation detail that matters)."""
    absorbing_terminal: bool = True
    """A terminated step is a success that keeps paying (see `absorbing_reward`)."""
    max_init_std: float = 0.2
    """Cap on the starting exploration std: a BC std fitted to noisy demos makes the first
    rollouts fail where the deterministic policy succeeds."""

    def __post_init__(self) -> None:
        if self.num_envs < 1 or self.rollout_steps < 1 or not 0 < self.clip < 1:
            raise ValueError("num_envs, rollout_steps >= 1 and 0 < clip < 1")


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, dones: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Generalised advantage estimation over a (T, N) rollout.

    `next_values[t]` is V of the state after step t (the final observation's value for steps
    that were truncated, 0 after a termination via `dones`). Returns advantages and returns.
    """
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(T)):
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_values[t] * not_done - values[t]
        last = delta + gamma * lam * not_done * last
        adv[t] = last
    return adv, adv + values


def value_loss(
    v: torch.Tensor, v_old: torch.Tensor, ret: torch.Tensor, clip: float | None
) -> torch.Tensor:
    """Squared error to the returns; with `clip`, the larger of the clipped and unclipped errors."""
    if clip is None:
        return 0.5 * (v - ret).pow(2).mean()
    v_clipped = v_old + (v - v_old).clamp(-clip, clip)
    return 0.5 * torch.max((v - ret).pow(2), (v_clipped - ret).pow(2)).mean()


class PPO:
    """Actor-critic PPO update on minibatches of a rollout."""

    name = "ppo"
    schedule = UpdateSchedule.ITERATIVE
    data = DataKind.ONLINE

    def __init__(
        self,
        actor: GaussianActor,
        value: ValueNet,
        config: PPOConfig | None = None,
        *,
        compile: bool = False,
    ) -> None:
        self.config = cfg = config or PPOConfig()
        self.actor, self.value = actor, value
        # one optimiser, a parameter group (and learning rate) each: one backward pass and one
        # fused step per minibatch. The normaliser is a buffer, so no optimiser sees it (frozen).
        self.opt = adam(
            [
                {"params": list(self.actor.parameters()), "lr": cfg.actor_lr},
                {"params": list(self.value.parameters()), "lr": cfg.critic_lr},
            ],
            cfg.critic_lr,
            eps=cfg.adam_eps,
        )
        self.rollouts = 0
        self._losses = maybe_compile(self.losses, compile)

    def losses(self, batch: Batch, with_actor: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """Total loss and its parts; the actor's part only once the critic has warmed up."""
        cfg = self.config
        lv = value_loss(self.value(batch["obs"]), batch["v_old"], batch["ret"], cfg.value_clip)
        if not with_actor:
            return lv, {"value_loss": lv}
        adv = batch["adv"]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        d = self.actor.dist(batch["obs"])
        lp, m = ppo_clip_loss(d.log_prob(batch["action"]), batch["logp"], adv, cfg.clip)
        ent = d.entropy().mean()
        return lv + lp - cfg.entropy * ent, {"value_loss": lv, "policy_loss": lp, "entropy": ent, **m}  # fmt: skip

    def update(self, batch: Batch) -> dict[str, float]:
        """batch: obs, action, logp, adv, ret, v_old (all (B, ...))."""
        cfg = self.config
        with_actor = self.rollouts >= cfg.critic_warmup
        loss, metrics = self._losses(batch, with_actor)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.value.parameters(), cfg.grad_clip)
        if with_actor:
            nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.grad_clip)
        self.opt.step()  # parameters without a gradient (the actor in warm-up) are skipped
        return scalars(metrics)

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "value": self.value.state_dict(),
            "opt": self.opt.state_dict(),
            "rollouts": self.rollouts,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for k in ("actor", "value", "opt"):
            getattr(self, k).load_state_dict(state[k])
        self.rollouts = int(state["rollouts"])

    def config_json(self) -> dict[str, Any]:
        return asdict(self.config)
