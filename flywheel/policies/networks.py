"""Networks shared by every algorithm: observation encoder, Gaussian actor, V and Q heads.

Shape glossary: B batch, D_k per-key low-dim size, (H, W, C) camera frames (uint8), A action
size, F encoder feature size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from flywheel.policies.limits import HALF_LOG_2PI, LOG_STD_MAX, LOG_STD_MIN
from flywheel.policies.normalizer import Normalizer


@dataclass(frozen=True, kw_only=True)
class PolicySpec:
    """What a policy consumes and produces, and its network sizes; saved as JSON in a bundle."""

    obs_shapes: dict[str, tuple[int, ...]]
    """Low-dim observation keys (in this order) and per-step shapes."""
    action_dim: int
    """Size of the action vector."""
    cameras: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Camera names and (H, W, C) frame shapes; empty for low-dim policies."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of every MLP head."""
    image_features: int = 64
    """Feature size of each camera's CNN."""
    action_low: float = -1.0
    """Lower action limit (actions are clipped to it at deployment)."""
    action_high: float = 1.0
    """Upper action limit."""
    squash: bool = False
    """tanh-squashed Gaussian (SAC) instead of a Gaussian around a tanh-bounded mean (BC/PPO)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "obs_shapes", {k: tuple(v) for k, v in self.obs_shapes.items()})
        object.__setattr__(self, "cameras", {k: tuple(v) for k, v in self.cameras.items()})
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.action_dim < 1 or not (self.obs_shapes or self.cameras):
            raise ValueError("a policy needs an action and at least one observation")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["obs_shapes"] = {k: list(v) for k, v in self.obs_shapes.items()}
        d["cameras"] = {k: list(v) for k, v in self.cameras.items()}
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PolicySpec:
        return cls(**d)


def mlp(
    in_dim: int, hidden: Sequence[int], out_dim: int, *, layer_norm: bool = False
) -> nn.Sequential:
    """Linear-(LayerNorm)-ReLU stack; LayerNorm helps critics on off-policy data (RLPD)."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h)] + ([nn.LayerNorm(h)] if layer_norm else []) + [nn.ReLU()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class ImageEncoder(nn.Module):
    """Small CNN for one camera: (B, H, W, C) uint8 -> (B, F). Sized for 84-128 px frames."""

    def __init__(self, shape: tuple[int, ...], features: int) -> None:
        super().__init__()
        h, w, c = shape if len(shape) == 3 else (*shape, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(c, 16, 5, stride=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2), nn.ReLU(),
        )  # fmt: skip
        with torch.no_grad():
            n = self.conv(torch.zeros(1, c, h, w)).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(n, features), nn.LayerNorm(features))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img.float() / 255.0
        x = x.unsqueeze(-1) if x.dim() == 3 else x  # (B, H, W) grayscale
        return self.head(self.conv(x.permute(0, 3, 1, 2)))  # (B, C, H, W) for conv


class ObsEncoder(nn.Module):
    """Normalised low-dim keys (flattened, in spec order) + one CNN per camera -> (B, F)."""

    def __init__(self, spec: PolicySpec, normalizer: Normalizer) -> None:
        super().__init__()
        self.spec = spec
        self.normalizer = normalizer
        self.cams = nn.ModuleDict(
            {c: ImageEncoder(s, spec.image_features) for c, s in spec.cameras.items()}
        )
        self.out_dim = (
            sum(math.prod(s) for s in spec.obs_shapes.values())
            + len(spec.cameras) * spec.image_features
        )

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if not self.spec.cameras:
            return self.normalizer.flat(obs)
        parts = [self.normalizer.flat(obs)] if self.spec.obs_shapes else []
        parts += [self.cams[c](obs[c]) for c in self.spec.cameras]
        return torch.cat(parts, dim=-1)


@dataclass(frozen=True)
class DiagGaussian:
    """N(mean, exp(log_std)^2) over the last axis, densities summed over it.

    Written out rather than `torch.distributions.Independent(Normal(...))`: the same formulas
    without argument validation and intermediate objects, which cost a third of a small actor's
    update on one CPU thread.
    """

    mean: torch.Tensor
    """(B, A)."""
    log_std: torch.Tensor
    """(B, A) or broadcastable to it."""

    @property
    def std(self) -> torch.Tensor:
        return self.log_std.exp()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) sum_i log N(x_i; mean_i, std_i)."""
        z = (x - self.mean) * (-self.log_std).exp()
        return (-0.5 * z.pow(2) - self.log_std - HALF_LOG_2PI).sum(-1)

    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * eps, differentiable in mean and std (the reparameterisation trick)."""
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)  # fmt: skip
        return self.mean + self.std * eps

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(generator)

    def entropy(self) -> torch.Tensor:
        """(B,) sum_i (0.5 + log(2 pi)/2 + log std_i)."""
        return (self.log_std + 0.5 + HALF_LOG_2PI).expand_as(self.mean).sum(-1)


class GaussianActor(nn.Module):
    """pi(a|s). Unsquashed: N(tanh(mu(s)), sigma) with a state-independent sigma (BC, PPO: exact
    log-probs of dataset actions, even at the limits). Squashed: tanh(N(mu(s), sigma(s))) (SAC)."""

    def __init__(
        self, spec: PolicySpec, normalizer: Normalizer, init_log_std: float = -0.5
    ) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = ObsEncoder(spec, normalizer)
        a = spec.action_dim
        self.net = mlp(self.encoder.out_dim, spec.hidden, 2 * a if spec.squash else a)
        self.log_std = nn.Parameter(torch.full((a,), init_log_std), requires_grad=not spec.squash)

    def dist(self, obs: Mapping[str, torch.Tensor]) -> DiagGaussian:
        """The action distribution before squashing (B, A)."""
        out = self.net(self.encoder(obs))
        if self.spec.squash:
            mu, log_std = out.chunk(2, dim=-1)
            log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
            return DiagGaussian(mu, log_std)
        return self.around(torch.tanh(out))

    def around(self, mean: torch.Tensor) -> DiagGaussian:
        """The unsquashed policy's distribution at a state where its mean is `mean` (B, A): its
        sigma does not depend on the state, so a table of means is a table of distributions."""
        assert not self.spec.squash, "a squashed policy's sigma depends on the state"
        return DiagGaussian(mean, self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).expand_as(mean))

    def log_prob(self, obs: Mapping[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        """(B,) log pi(a|s) of given actions (unsquashed policies only: BC, PPO)."""
        assert not self.spec.squash, "use sample() for squashed policies"
        return self.dist(obs).log_prob(action)

    def sample(self, obs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action (B, A) and its log-prob (B,), squash-corrected for SAC."""
        d = self.dist(obs)
        u = d.rsample()
        if not self.spec.squash:
            return u, d.log_prob(u)
        a = torch.tanh(u)
        logp = d.log_prob(u) - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return a, logp

    def mode(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The deterministic action (B, A), as deployed."""
        mu = self.dist(obs).mean
        return torch.tanh(mu) if self.spec.squash else mu


class ValueNet(nn.Module):
    """V(s) -> (B,)."""

    def __init__(
        self, spec: PolicySpec, normalizer: Normalizer, *, layer_norm: bool = False
    ) -> None:
        super().__init__()
        self.layer_norm = layer_norm
        self.encoder = ObsEncoder(spec, normalizer)
        self.net = mlp(self.encoder.out_dim, spec.hidden, 1, layer_norm=layer_norm)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.net(self.encoder(obs)).squeeze(-1)


class DoubleQ(nn.Module):
    """Two Q(s, a) heads -> (2, B); the min of the two curbs over-estimation."""

    def __init__(
        self, spec: PolicySpec, normalizer: Normalizer, *, layer_norm: bool = False
    ) -> None:
        super().__init__()
        self.encoder = ObsEncoder(spec, normalizer)
        d = self.encoder.out_dim + spec.action_dim
        self.q1 = mlp(d, spec.hidden, 1, layer_norm=layer_norm)
        self.q2 = mlp(d, spec.hidden, 1, layer_norm=layer_norm)

    def forward(self, obs: Mapping[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.encoder(obs), action], dim=-1)
        return torch.stack([self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)])
