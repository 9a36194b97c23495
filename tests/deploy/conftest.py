"""Fixtures for deployment tests: small bundles, a BC policy on `reach`, registries, servers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from flywheel.deploy.deployed import DeployedPolicy
from flywheel.deploy.runners import EagerRunner
from flywheel.policies import GaussianActor, Normalizer, PolicySpec, load_bundle, save_bundle
from flywheel.registry import GateConfig, Registry

TOY_OBS = {"a": (3,), "b": (2,)}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def toy_bundle(
    path: Path,
    *,
    seed: int = 0,
    hidden=(16,),
    obs_shapes=None,
    cameras=None,
    task: str = "toy",
    control_hz: float = 50.0,
    note: str = "",
) -> Path:
    """A small untrained actor with a non-trivial normaliser, saved as a bundle."""
    torch.manual_seed(seed)
    spec = PolicySpec(
        obs_shapes=obs_shapes or TOY_OBS, action_dim=2, hidden=hidden, cameras=cameras or {}
    )
    norm = Normalizer(spec.obs_shapes)
    for k in spec.obs_shapes:
        getattr(norm, f"mean_{k}").fill_(0.25)
        getattr(norm, f"std_{k}").fill_(2.0)
    actor = GaussianActor(spec, norm)
    with torch.no_grad():  # make actions large enough that clipping and rate limits matter
        actor.net[-1].weight.mul_(20.0)
    return save_bundle(
        path, actor, task=task, control_hz=control_hz, lineage={"algorithm": "toy", "note": note}
    )


def toy_policy(path: Path, **kw) -> DeployedPolicy:
    b = load_bundle(toy_bundle(path, **kw))
    return DeployedPolicy(bundle=b, runner=EagerRunner(b.actor), version=None, backend="eager")


def slow_policy(policy: DeployedPolicy, delay_s: float, gate: threading.Event | None = None) -> DeployedPolicy:  # fmt: skip
    """`policy` with an inference that takes `delay_s` longer (deadline and watchdog tests), or,
    with a `gate`, that waits until the test sets it: "still busy" without a clock to race."""

    class Slow:
        backend, keys = "slow", policy.runner.keys

        def __call__(self, obs):
            if gate is not None:
                gate.wait(60)
            time.sleep(delay_s)
            return policy.runner(obs)

    return DeployedPolicy(bundle=policy.bundle, runner=Slow(), version=None, backend="slow")


def toy_obs(rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    rng = rng or np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in TOY_OBS.items()}


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture(scope="session")
def reach_policies(tmp_path_factory) -> dict[str, Path]:
    """BC on noisy expert demos of `reach` (succeeds about half the time), a twin of it (same
    weights, another hash), and an untrained actor with the same normaliser (never succeeds)."""
    pytest.importorskip("sim")
    from flywheel.corpus import Corpus
    from flywheel.training import OfflineConfig, train_offline
    from sim.collect import collect

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("reach")
    collect("reach", 40, noise=0.3, seed=0, corpus_path=d / "c.zarr")
    cfg = OfflineConfig(
        task="reach", algo="bc", bc_steps=800, hidden=(64, 64), checkpoint_every=10_000
    )
    good = Path(train_offline(Corpus(d / "c.zarr"), cfg, home=d)["bundle"])
    b = load_bundle(good)
    twin = save_bundle(
        d / "twin",
        b.actor,
        task="reach",
        control_hz=20.0,
        lineage={"algorithm": "bc", "parent": str(good), "note": "twin"},
    )
    torch.manual_seed(123)
    worse = GaussianActor(b.spec, b.actor.encoder.normalizer)
    worse_path = save_bundle(
        d / "worse", worse, task="reach", control_hz=20.0, lineage={"algorithm": "untrained"}
    )
    return {"good": good, "twin": twin, "worse": worse_path}


def make_env(task: str, variation: str):
    import gymnasium as gym

    import sim

    return gym.make(sim.GYM_IDS[task], variation=variation)


GATES = GateConfig(episodes=30, min_episodes=30, latency_budget_ms=50.0, latency_samples=100)
"""Small gates for tests: 30 paired episodes, a budget a loaded 2-core machine meets."""
