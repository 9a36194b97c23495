"""Controller runtime: validation, limits, the watchdog, hot swaps and the fallback to previous."""

from __future__ import annotations

import time

import numpy as np
import pytest

from flywheel.deploy.controller import Controller, ControllerConfig, PolicySlot, SwapError
from flywheel.deploy.deployed import DeployedPolicy
from flywheel.deploy.watchdog import HOLD
from tests.deploy.conftest import slow_policy, toy_obs, toy_policy


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def policy(tmp_path) -> DeployedPolicy:
    return toy_policy(tmp_path / "p")


def test_valid_observations_get_clipped_rate_limited_actions(policy):
    ctl = Controller(policy, ControllerConfig(max_delta=0.1))
    rng = np.random.default_rng(1)
    raw = [policy.runner(o) for o in (toy_obs(rng) for _ in range(20))]
    assert max(np.abs(r).max() for r in raw) > 0.9  # the toy actor saturates: limits matter
    rng = np.random.default_rng(1)
    prev = None
    for _ in range(20):
        d = ctl.act(toy_obs(rng))
        assert d.status == "ok" and d.code is None and d.action.dtype == np.float32
        assert np.all(d.action >= policy.low) and np.all(d.action <= policy.high)
        if prev is not None:
            assert np.abs(d.action - prev).max() <= 0.1 + 1e-6
        prev = d.action
    ctl.reset()
    first = ctl.act(toy_obs(np.random.default_rng(1)))
    np.testing.assert_allclose(first.action, np.clip(raw[0], -1, 1), atol=1e-6)  # no limit at t=0


@pytest.mark.parametrize(
    ("mutate", "code", "fragment"),
    [
        (lambda o: o.pop("b"), "schema", "missing ['b']"),
        (lambda o: o.update(c=np.zeros(1, np.float32)), "schema", "unexpected ['c']"),
        (lambda o: o.update(a=np.zeros(4, np.float32)), "schema", "shape (4,)"),
        (lambda o: o.update(a=np.zeros(3, np.float64)), "schema", "dtype float64"),
        (lambda o: o.update(a=[0.0, 0.0, 0.0]), "schema", "expected an ndarray"),
        (lambda o: o["a"].__setitem__(1, np.nan), "nonfinite", "NaN or inf"),
        (lambda o: o["b"].__setitem__(0, np.inf), "nonfinite", "NaN or inf"),
    ],
)
def test_invalid_observations_are_refused_with_a_safe_action(policy, mutate, code, fragment):
    ctl = Controller(policy, ControllerConfig(hold_ticks=2))
    good = ctl.act(toy_obs())
    bad = toy_obs()
    mutate(bad)
    d = ctl.act(bad)
    assert d.status == "hold" and d.code == code and fragment in d.message
    np.testing.assert_array_equal(d.action, good.action)  # the last safe action is held


def test_watchdog_holds_then_stops_on_stale_observations_until_reset(policy):
    clock = Clock()
    ctl = Controller(policy, ControllerConfig(hold_ticks=2), clock=clock)
    period = 1 / policy.control_hz
    ok = ctl.act(toy_obs(), stamp=clock.t - 1.5 * period)  # 1.5 periods old: fine
    assert ok.status == "ok"
    stale = clock.t - 2.5 * period
    d1 = ctl.act(toy_obs(), stamp=stale)
    d2 = ctl.act(toy_obs(), stamp=stale)
    assert (d1.status, d1.code, d2.status) == ("hold", "stale", "hold") and "ms old" in d1.message
    np.testing.assert_array_equal(d1.action, ok.action)
    d3 = ctl.act(toy_obs(), stamp=stale)
    assert d3.status == "stopped" and d3.code == "stale"
    np.testing.assert_array_equal(d3.action, np.zeros(2, np.float32))
    fresh = ctl.act(toy_obs(), stamp=clock.t)  # latched: fresh data does not restart motion
    assert fresh.status == "stopped" and "reset to continue" in fresh.message
    assert ctl.episode_report()["safety_stops"] == 1 and ctl.faults["stale"] == 3
    ctl.reset()
    assert ctl.act(toy_obs(), stamp=clock.t).status == "ok"


def test_one_good_tick_between_faults_resets_the_hold_count(policy):
    clock = Clock()
    ctl = Controller(policy, ControllerConfig(hold_ticks=1), clock=clock)
    old = clock.t - 1.0
    for _ in range(5):
        assert ctl.act(toy_obs(), stamp=old).status == "hold"
        assert ctl.act(toy_obs(), stamp=clock.t).status == "ok"


def test_missed_inference_deadline_discards_the_action(policy):
    slow = slow_policy(policy, 0.03)
    ctl = Controller(slow, ControllerConfig(hold_ticks=0))  # 50 Hz: 20 ms deadline
    d = ctl.act(toy_obs())
    assert d.status == "stopped" and d.code == "deadline" and d.inference_ms >= 30


def test_stop_action_can_hold_a_dimension(policy):
    clock = Clock()
    ctl = Controller(policy, ControllerConfig(hold_ticks=0, stop_action=(0.0, HOLD)), clock=clock)
    ok = ctl.act(toy_obs())
    d = ctl.act(toy_obs(), stamp=clock.t - 10)
    assert d.status == "stopped"
    np.testing.assert_array_equal(d.action, [0.0, ok.action[1]])


def test_hot_swap_happens_between_episodes_not_mid_episode(tmp_path, policy):
    new = toy_policy(tmp_path / "new", seed=7)
    slot = PolicySlot(policy)
    ctl = Controller(slot, ControllerConfig(max_delta=None))
    obs = toy_obs()
    before = ctl.act(obs).action
    slot.stage(new, reason="test")
    mid = ctl.act(obs)
    np.testing.assert_array_equal(mid.action, before)  # still the old policy this episode
    assert mid.version == policy.name and ctl.policy is policy
    ctl.reset()
    after = ctl.act(obs)
    assert ctl.policy is new and not np.allclose(after.action, before)
    np.testing.assert_allclose(after.action, new.runner(obs), atol=1e-6)


def test_tick_boundary_swap_when_asked(tmp_path, policy):
    new = toy_policy(tmp_path / "new", seed=7)
    slot = PolicySlot(policy)
    ctl = Controller(slot, ControllerConfig(swap_at="tick", max_delta=None))
    obs = toy_obs()
    ctl.act(obs)
    slot.stage(new, reason="test")
    np.testing.assert_allclose(ctl.act(obs).action, new.runner(obs), atol=1e-6)


def test_a_policy_with_another_schema_cannot_be_staged(tmp_path, policy):
    other = toy_policy(tmp_path / "o", obs_shapes={"a": (4,)})
    with pytest.raises(SwapError, match="schema"):
        PolicySlot(policy).stage(other, reason="test")


def test_repeated_safety_stops_fall_back_to_previous(tmp_path, policy):
    prev = toy_policy(tmp_path / "prev", seed=3)
    events = []
    slot = PolicySlot(
        policy,
        fallback=lambda: prev,
        fallback_after=2,
        on_event=lambda kind, doc: events.append((kind, doc)),
    )
    clock = Clock()
    ctl = Controller(slot, ControllerConfig(hold_ticks=0), clock=clock)
    for episode in range(2):
        ctl.reset()
        assert ctl.policy is policy, episode
        assert ctl.act(toy_obs(), stamp=clock.t - 1).status == "stopped"
    deadline = time.monotonic() + 5
    while slot.latest is not prev and time.monotonic() < deadline:  # loaded off the control path
        time.sleep(0.01)
    assert slot.latest is prev and slot.fallen_back_from == policy.name
    assert ctl.policy is policy  # not mid-episode
    ctl.reset()
    assert ctl.policy is prev and ctl.act(toy_obs()).status == "ok"
    kinds = [k for k, _ in events]
    assert kinds.count("safety_stop") == 2 and "fallback" in kinds
