"""PPO for online fine-tuning: iterative, on fresh rollouts of the current policy.

Started from the offline policy and value (Uni-O4's hand-off). What keeps the start of
fine-tuning from destroying the offline policy: a small ratio clip (0.05), a low actor learning
rate, a frozen observation normaliser, and a critic warm-up during which only V learns (the
offline V was fitted to the data's behaviour, not to this policy).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from flywheel.algorithms.base import Batch, DataKind, UpdateSchedule, scalars
from flywheel.algorithms.multistep import ppo_clip_loss
from flywheel.algorithms.optim import Metrics, adam_step
from flywheel.policies import GaussianActor, ValueNet


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
    parallel_update: bool = True
    """On two or more cores, the value's and the actor's passes over a rollout run in two
    threads (`PPO.fit`; same result as one after the other)."""
    max_init_std: float = 0.2
    """Cap on the starting exploration std: a BC std fitted to noisy demos makes the first
    rollouts fail where the deterministic policy succeeds."""

    def __post_init__(self) -> None:
        if self.num_envs < 1 or self.rollout_steps < 1 or not 0 < self.clip < 1:
            raise ValueError("num_envs, rollout_steps >= 1 and 0 < clip < 1")


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, dones: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Generalised advantage estimation over a (T, N) rollout (CPU tensors).

    `next_values[t]` is V of the state after step t (the final observation's value for steps
    that were truncated, 0 after a termination via `dones`). Returns advantages and returns.
    The backward recursion runs in NumPy: over T rows of a few envs each, torch's per-op cost
    made it ~8 ms of a 2,048-step rollout, NumPy's ~0.4 ms, with the same float32 arithmetic
    in the same order (bitwise the same result; tested).
    """
    r, v, nv, d = (x.numpy() for x in (rewards, values, next_values, dones))
    not_done = 1.0 - d
    delta = r + gamma * nv * not_done - v
    decay = gamma * lam * not_done
    adv = np.empty_like(delta)
    last = np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        last = delta[t] + decay[t] * last
        adv[t] = last
    a = torch.from_numpy(adv)
    return a, a + values


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
        # actor and value share no parameters, so each has its own Adam step and its own pass
        # over a rollout: the two passes can run side by side (`fit`). The normaliser is a
        # buffer, so no optimiser sees it (frozen).
        clip = cfg.grad_clip
        self.actor_step = adam_step(self.actor_losses, [actor], cfg.actor_lr, compile=compile, max_norm=clip, eps=cfg.adam_eps)  # fmt: skip
        self.value_step = adam_step(self.critic_loss, [value], cfg.critic_lr, compile=compile, max_norm=clip, eps=cfg.adam_eps)  # fmt: skip
        self.rollouts = 0

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """Regression of V on the rollout's returns (`value_loss`)."""
        lv = value_loss(self.value(batch["obs"]), batch["v_old"], batch["ret"], self.config.value_clip)  # fmt: skip
        return lv, {}

    def actor_losses(self, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """The clipped surrogate on normalised advantages, minus the entropy bonus."""
        cfg = self.config
        adv = batch["adv"]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        d = self.actor.dist(batch["obs"])
        lp, m = ppo_clip_loss(d.log_prob(batch["action"]), batch["logp"], adv, cfg.clip)
        ent = d.entropy().mean()
        return lp - cfg.entropy * ent, {"policy_loss": lp, "entropy": ent, **m}

    def update_value(self, batch: Batch) -> dict[str, float]:
        return {"value_loss": self.value_step(batch)[0].item()}

    def update_actor(self, batch: Batch) -> dict[str, float]:
        return scalars(self.actor_step(batch)[1])

    @property
    def with_actor(self) -> bool:
        """False during the critic warm-up (only V learns)."""
        return self.rollouts >= self.config.critic_warmup

    def update(self, batch: Batch) -> dict[str, float]:
        """batch: obs, action, logp, adv, ret, v_old (all (B, ...))."""
        metrics = self.update_value(batch)
        return metrics | self.update_actor(batch) if self.with_actor else metrics

    def fit(self, minibatches: list[Batch], *, parallel: bool = False) -> dict[str, float]:
        """Every minibatch update of one rollout; the last one's metrics.

        The value's pass and the actor's pass touch disjoint parameters and optimisers, so
        running them one after the other or side by side gives the same networks. With
        `parallel` the value's runs in a helper thread: PyTorch releases the GIL inside its
        kernels, so on two cores the update phase (while env workers sit idle) took about
        0.65x the time.
        """
        value_pass = lambda: [self.update_value(b) for b in minibatches][-1]  # noqa: E731
        if not self.with_actor:
            return value_pass()
        actor_pass = lambda: [self.update_actor(b) for b in minibatches][-1]  # noqa: E731
        if not parallel:
            return value_pass() | actor_pass()
        with ThreadPoolExecutor(max_workers=1) as helper:
            values = helper.submit(value_pass)
            actor = actor_pass()
            return values.result() | actor

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "value": self.value.state_dict(),
            "actor_opt": self.actor_step.state_dict(),
            "value_opt": self.value_step.state_dict(),
            "rollouts": self.rollouts,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.value.load_state_dict(state["value"])
        self.actor_step.load_state_dict(state["actor_opt"])
        self.value_step.load_state_dict(state["value_opt"])
        self.rollouts = int(state["rollouts"])

    def config_json(self) -> dict[str, Any]:
        return asdict(self.config)
