"""NumPy forward passes of low-dim policies and values, for acting one env step at a time.

Acting in a vectorised env calls the actor (and, for PPO, the value) once per step on a batch
of about 8 observations. At that size PyTorch's per-op dispatch costs several times the
arithmetic: on one core here, PPO's per-step actor + value + sample + log-prob took about
500 us in torch and under 100 us as NumPy matmuls on the same weights (`python -m
benchmarks.learning --only online_speed` shows what it does to env steps/s). Training stays in
torch; only acting and evaluation use this.

A `NumpyActor` / `NumpyValue` is a snapshot: it copies the weights when built (the transposed
copy is what makes the matmul fast: OpenBLAS took 70 us for `h @ W.T` on a view and 16 us on a
contiguous copy), so build one after the updates it should see. That costs about as much as
one torch forward pass, so even SAC, which updates between every two steps, gains. Camera policies
(CNN encoders) and GPU modules run through torch behind the same methods (`supports` says
which run in NumPy), so callers have one path.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flywheel.policies.limits import CLIP, HALF_LOG_2PI, LOG_STD_MAX, LOG_STD_MIN

if TYPE_CHECKING:  # torch is imported where a snapshot is built or runs through torch, so an
    # env worker acting with NumPy snapshots never pays its ~2 s import (flywheel/workers.py)
    import torch
    from torch import nn

    from flywheel.policies.networks import GaussianActor, ValueNet
    from flywheel.policies.normalizer import Normalizer

Obs = Mapping[str, np.ndarray]
"""{key: (B, ...)} observations, any float dtype."""


def supports(module: GaussianActor | ValueNet) -> bool:
    """Low-dim CPU modules only: a CNN encoder or GPU weights stay with torch."""
    p = next(module.parameters())
    return not module.encoder.spec.cameras and p.device.type == "cpu"


def _copy(t: torch.Tensor) -> np.ndarray:
    """A C-contiguous copy, never a view (a view of a live parameter would see later updates)."""
    return np.array(t.detach().numpy(), order="C", copy=True)


def as_tensors(obs: Obs, device: torch.device) -> dict[str, torch.Tensor]:
    """float32 tensors on `device`; uint8 camera frames stay uint8."""
    import torch

    out = {k: torch.as_tensor(np.asarray(v)) for k, v in obs.items()}
    return {k: (v if v.dtype == torch.uint8 else v.float()).to(device) for k, v in out.items()}


class _Inputs:
    """The normaliser: keys flattened and concatenated in order, then (x - mean) / std, clipped."""

    def __init__(self, normalizer: Normalizer) -> None:
        self.keys = normalizer.keys
        mean, std = normalizer.flat_stats()
        self.mean, self.std = _copy(mean), _copy(std)

    def __call__(self, obs: Obs) -> np.ndarray:
        parts = [np.asarray(obs[k], np.float32).reshape(len(obs[k]), -1) for k in self.keys]
        x = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        x = (x - self.mean) / self.std
        return np.minimum(np.maximum(x, -CLIP, out=x), CLIP, out=x)  # np.clip's overhead is 3x


class _MLP:
    """`networks.mlp`'s Linear / LayerNorm / ReLU stack on copies of its weights."""

    def __init__(self, net: nn.Sequential) -> None:
        from torch import nn

        self.layers: list[tuple] = []
        for m in net:
            if isinstance(m, nn.Linear):
                self.layers.append(("linear", _copy(m.weight.T), _copy(m.bias)))
            elif isinstance(m, nn.LayerNorm):
                self.layers.append(("norm", _copy(m.weight), _copy(m.bias), m.eps))
            elif isinstance(m, nn.ReLU):
                self.layers.append(("relu",))
            else:
                raise TypeError(f"no NumPy forward for {type(m).__name__}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for kind, *p in self.layers:
            if kind == "linear":
                x = x @ p[0] + p[1]
            elif kind == "relu":
                np.maximum(x, 0.0, out=x)
            else:
                w, b, eps = p
                mu = x.mean(-1, keepdims=True)
                var = ((x - mu) ** 2).mean(-1, keepdims=True)
                x = (x - mu) / np.sqrt(var + eps) * w + b
        return x


class NumpyActor:
    """`GaussianActor.dist` / `mode` on NumPy arrays (same formulas, same weights)."""

    def __init__(self, actor: GaussianActor) -> None:
        # the spec's two facts acting needs, not the spec: a PolicySpec would import torch
        # where a worker unpickles this snapshot
        self.squash, self.action_dim = actor.spec.squash, actor.spec.action_dim
        self.keys = [*actor.spec.obs_shapes, *actor.spec.cameras]
        self.torch = None if supports(actor) else actor
        if self.torch is None:
            self.inputs = _Inputs(actor.encoder.normalizer)
            self.net = _MLP(actor.net)
            self.log_std = np.clip(_copy(actor.log_std), LOG_STD_MIN, LOG_STD_MAX)

    def dist(self, obs: Obs) -> tuple[np.ndarray, np.ndarray]:
        """(mean, log_std), each (B, A): the distribution before squashing."""
        if self.torch is not None:
            import torch

            with torch.no_grad():
                d = self.torch.dist(as_tensors({k: obs[k] for k in self.keys}, self.torch.log_std.device))  # fmt: skip
            return d.mean.cpu().numpy(), d.log_std.expand_as(d.mean).cpu().numpy()
        out = self.net(self.inputs(obs))
        if self.squash:
            mu, log_std = np.split(out, 2, axis=-1)
            return mu, np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
        return np.tanh(out), np.broadcast_to(self.log_std, out.shape)

    def mode(self, obs: Obs) -> np.ndarray:
        """The deterministic action (B, A)."""
        mu, _ = self.dist(obs)
        return np.tanh(mu) if self.squash else mu

    def sample(self, obs: Obs, generator: torch.Generator | None = None, *, noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """(u, mean, log_std): u ~ N(mean, std) before squashing, drawn from torch's generator
        exactly as `DiagGaussian.sample` draws it, so seeded runs keep their random streams;
        or u = mean + std * `noise` for standard normal draws made in advance."""
        mu, log_std = self.dist(obs)
        if noise is None:
            import torch

            noise = torch.randn(mu.shape, generator=generator).numpy()
        return mu + np.exp(log_std) * noise, mu, log_std

    def act(self, u: np.ndarray) -> np.ndarray:
        """The env action of a pre-squash sample: tanh(u) for squashed actors, else u."""
        return np.tanh(u) if self.squash else u


def log_prob(x: np.ndarray, mean: np.ndarray, log_std: np.ndarray) -> np.ndarray:
    """(B,) diagonal Gaussian log-density, as `DiagGaussian.log_prob`."""
    z = (x - mean) * np.exp(-log_std)
    return (-0.5 * z**2 - log_std - HALF_LOG_2PI).sum(-1)


class NumpyValue:
    """`ValueNet.forward` on NumPy arrays: (B,)."""

    def __init__(self, value: ValueNet) -> None:
        self.keys = [*value.encoder.spec.obs_shapes, *value.encoder.spec.cameras]
        self.torch = None if supports(value) else value
        if self.torch is None:
            self.inputs = _Inputs(value.encoder.normalizer)
            self.net = _MLP(value.net)

    def __call__(self, obs: Obs) -> np.ndarray:
        if self.torch is not None:
            import torch

            device = next(self.torch.parameters()).device
            with torch.no_grad():
                return self.torch(as_tensors({k: obs[k] for k in self.keys}, device)).cpu().numpy()  # fmt: skip
        return self.net(self.inputs(obs))[:, 0]


@dataclass(frozen=True)
class Behaviour:
    """The actor and value that act for one on-policy rollout, frozen as snapshots.

    Picklable, so an env worker process can act with its own copy (`EnvPool.segment`). Camera
    modules act through torch, so they are deep-copied first: updates made after the snapshot
    was taken cannot reach it either way.
    """

    actor: NumpyActor
    value: NumpyValue

    @classmethod
    def of(cls, actor: GaussianActor, value: ValueNet) -> Behaviour:
        if not (supports(actor) and supports(value)):
            actor, value = copy.deepcopy(actor), copy.deepcopy(value)
        return cls(NumpyActor(actor), NumpyValue(value))
