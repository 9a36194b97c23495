"""The NumPy acting path computes what the torch networks compute, for every kind of head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flywheel.policies import GaussianActor, Normalizer, NumpyPolicy, PolicySpec, ValueNet
from flywheel.policies.numpy_forward import Behaviour, NumpyActor, NumpyValue, log_prob, supports


def _normalizer(spec: PolicySpec) -> Normalizer:
    n = Normalizer(spec.obs_shapes)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k, shape in spec.obs_shapes.items():
            getattr(n, f"mean_{k}").copy_(torch.randn(shape, generator=g))
            getattr(n, f"std_{k}").copy_(torch.rand(shape, generator=g) + 0.1)
    return n


def _obs(spec: PolicySpec, batch: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    obs = {
        k: rng.normal(size=(batch, *s)) * 5 for k, s in spec.obs_shapes.items()
    }  # float64, some clipped
    obs |= {c: rng.integers(0, 255, (batch, *s), dtype=np.uint8) for c, s in spec.cameras.items()}  # fmt: skip
    return obs


def _tensors(obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) if v.dtype == np.uint8 else torch.as_tensor(v).float() for k, v in obs.items()}  # fmt: skip


@pytest.mark.parametrize("squash", [False, True])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_numpy_actor_and_value_match_torch(squash: bool, layer_norm: bool) -> None:
    torch.manual_seed(0)
    spec = PolicySpec(obs_shapes={"a": (3,), "b": (2, 2)}, action_dim=4, squash=squash, hidden=(32, 32))  # fmt: skip
    norm = _normalizer(spec)
    actor, value = GaussianActor(spec, norm), ValueNet(spec, norm, layer_norm=layer_norm)
    obs = _obs(spec)
    assert supports(actor) and supports(value)
    with torch.no_grad():
        d = actor.dist(_tensors(obs))
        mu, log_std = NumpyActor(actor).dist(obs)
        np.testing.assert_allclose(mu, d.mean.numpy(), atol=1e-5)
        np.testing.assert_allclose(log_std, d.log_std.expand_as(d.mean).numpy(), atol=1e-6)
        np.testing.assert_allclose(NumpyActor(actor).mode(obs), actor.mode(_tensors(obs)).numpy(), atol=1e-5)  # fmt: skip
        np.testing.assert_allclose(NumpyValue(value)(obs), value(_tensors(obs)).numpy(), atol=1e-5)  # fmt: skip
        a = d.sample()
        np.testing.assert_allclose(log_prob(a.numpy(), mu, log_std), d.log_prob(a).numpy(), atol=1e-4)  # fmt: skip


def test_a_numpy_actor_is_a_snapshot_of_the_weights() -> None:
    spec = PolicySpec(obs_shapes={"a": (3,)}, action_dim=2, hidden=(16,))
    actor = GaussianActor(spec, Normalizer(spec.obs_shapes))
    obs = _obs(spec)
    before = NumpyActor(actor)
    m0 = before.mode(obs)
    with torch.no_grad():  # every kind of tensor it holds: weights (kept transposed), biases,
        for p in actor.parameters():  # log-std, and the normaliser's statistics
            p.add_(1.0)
        for b in actor.buffers():
            b.add_(1.0)
    np.testing.assert_array_equal(before.mode(obs), m0)  # built before the update: unchanged
    assert not np.allclose(NumpyActor(actor).mode(obs), m0)


def test_a_behaviour_snapshot_of_camera_modules_is_a_copy() -> None:
    """Camera modules act through torch, so the snapshot must copy them: an update made while
    a rollout acts (or after the snapshot was sent to a worker) cannot change its actions."""
    spec = PolicySpec(obs_shapes={"a": (3,)}, cameras={"front": (24, 24, 3)}, action_dim=2, hidden=(16,))  # fmt: skip
    actor, value = GaussianActor(spec, _normalizer(spec)), ValueNet(spec, _normalizer(spec))
    obs = _obs(spec, batch=3)
    snap = Behaviour.of(actor, value)
    m0, v0 = snap.actor.mode(obs), snap.value(obs)
    with torch.no_grad():
        actor.net[0].weight.add_(1.0)
        next(value.parameters()).add_(1.0)
    np.testing.assert_array_equal(snap.actor.mode(obs), m0)
    np.testing.assert_array_equal(snap.value(obs), v0)
    assert not np.allclose(NumpyActor(actor).mode(obs), m0)


def test_camera_actors_and_stochastic_policies_keep_torch_semantics() -> None:
    spec = PolicySpec(obs_shapes={"a": (3,)}, cameras={"front": (24, 24, 3)}, action_dim=2, hidden=(16,))  # fmt: skip
    actor = GaussianActor(spec, _normalizer(spec)).eval()
    obs = _obs(spec, batch=3)
    assert not supports(actor)  # the CNN runs in torch behind the same methods
    with torch.no_grad():
        np.testing.assert_allclose(NumpyActor(actor).mode(obs), actor.mode(_tensors(obs)).numpy(), atol=1e-6)  # fmt: skip
    # a seeded stochastic policy draws the same noise as torch's sampling from that seed
    low = PolicySpec(obs_shapes={"a": (3,)}, action_dim=2, hidden=(16,))
    lowdim = GaussianActor(low, _normalizer(low)).eval()
    got = NumpyPolicy(lowdim, deterministic=False, seed=5)(_obs(low))
    with torch.no_grad():
        want = lowdim.dist(_tensors(_obs(low))).sample(torch.Generator().manual_seed(5))
    np.testing.assert_allclose(got, want.clamp(-1, 1).numpy(), atol=1e-5)
