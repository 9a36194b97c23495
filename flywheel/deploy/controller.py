"""The controller runtime: the only path from a policy to a robot's actuators.

Per tick, `Controller.act(obs, stamp=...)`:
  1. adopt a newly staged policy, only if asked to swap at tick boundaries (default: at resets);
  2. a latched safety stop answers with the stop action until the next episode;
  3. check the observation against the schema (keys, shapes, dtypes, finite values);
  4. refuse observations older than `stale_periods` control periods;
  5. run the policy (normalisation is inside it) and refuse a result that missed its deadline
     or is not finite;
  6. clip to the action limits and to `max_delta` per dimension from the last action.
A refusal in 3-5 is a fault: the watchdog holds the last safe action, then stops safely.

A `PolicySlot` holds the policy the sessions should run (shared by every robot connected to a
server); staging a new one never interrupts an episode: each session adopts it at its next reset
(or next tick if `swap_at="tick"`). After `fallback_after` safety stops with one version, the
slot stages the fallback (the registry's `previous`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from flywheel.deploy.deployed import DeployedPolicy
from flywheel.deploy.watchdog import Watchdog

log = logging.getLogger("flywheel.controller")


@dataclass(frozen=True, kw_only=True)
class ControllerConfig:
    """Safety settings of a controller; saved beside its metrics."""

    max_delta: float | None = 0.5
    """Largest change of any action dimension between consecutive ticks (action units); None
    switches the rate limit off. The first action of an episode is only clipped to the limits."""
    stale_periods: float = 2.0
    """An observation older than this many control periods when inference starts is refused."""
    deadline_periods: float = 1.0
    """Inference taking longer than this many control periods is a missed deadline: its action
    is discarded (it would act on an old state)."""
    hold_ticks: int = 2
    """Faulty ticks in a row during which the last safe action is held before a safety stop."""
    stop_action: tuple[float | None, ...] | None = None
    """Action sent once stopped; None entries hold that dimension's last value. Default: zeros
    (for the sim arm: no TCP motion)."""
    fallback_after: int = 3
    """Safety stops with one version before the slot falls back to the previous version."""
    swap_at: Literal["episode", "tick"] = "episode"
    """When a newly staged policy is adopted: at the next reset, or at the next tick boundary."""
    control_hz: float | None = None
    """Control rate; default: the bundle's schema rate."""

    def __post_init__(self) -> None:
        if self.max_delta is not None and self.max_delta <= 0:
            raise ValueError("max_delta must be positive (or None for no rate limit)")
        if self.stale_periods <= 0 or self.deadline_periods <= 0:
            raise ValueError("stale_periods and deadline_periods must be positive")
        if self.hold_ticks < 0 or self.fallback_after < 1:
            raise ValueError("hold_ticks must be >= 0 and fallback_after >= 1")
        if self.swap_at not in ("episode", "tick"):
            raise ValueError(f"swap_at must be 'episode' or 'tick', not {self.swap_at!r}")


@dataclass(frozen=True)
class Decision:
    """One tick's outcome."""

    action: np.ndarray
    status: Literal["ok", "hold", "stopped"]
    version: str
    code: str | None = None
    """Fault code: schema, nonfinite, stale, deadline, nonfinite_action, stopped, or one the
    caller reports (oversize, bad_message, unauthorized)."""
    message: str | None = None
    inference_ms: float = 0.0


class SwapError(Exception):
    """A policy that cannot replace the running one (a different observation/action schema)."""


class PolicySlot:
    """The policy sessions should run next, plus fallback bookkeeping; thread-safe."""

    def __init__(
        self,
        policy: DeployedPolicy,
        *,
        fallback: Callable[[], DeployedPolicy | None] | None = None,
        fallback_after: int = 3,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._latest = policy
        self._lock = threading.Lock()
        self.fallback = fallback
        self.fallback_after = fallback_after
        self.on_event = on_event or (lambda kind, doc: None)
        self.stops: Counter[str] = Counter()
        self.swaps = 0
        self.fallen_back_from: str | None = None

    @property
    def latest(self) -> DeployedPolicy:
        return self._latest

    def stage(self, policy: DeployedPolicy, *, reason: str) -> None:
        """Make `policy` the one sessions adopt at their next swap point."""
        cur = self._latest
        if policy.schema["hash"] != cur.schema["hash"]:
            raise SwapError(
                f"{policy.name}: schema {policy.schema['hash']} differs from the running "
                f"{cur.name}'s {cur.schema['hash']}; connected robots agreed on the old one. "
                "Restart the server (and clients) to change schemas."
            )
        with self._lock:
            if policy is cur:
                return
            self._latest = policy
            self.swaps += 1
        log.info("staged %s (was %s): %s", policy.name, cur.name, reason)
        self.on_event("staged", {"from": cur.name, "to": policy.name, "reason": reason})

    def report_stop(self, policy: DeployedPolicy, reason: str) -> None:
        """Count a safety stop; after `fallback_after` of one version, stage the fallback."""
        with self._lock:
            self.stops[policy.name] += 1
            n = self.stops[policy.name]
            due = n >= self.fallback_after and self.fallen_back_from != policy.name
            due = due and self.fallback is not None and policy is self._latest
            if due:
                self.fallen_back_from = policy.name
        self.on_event("safety_stop", {"version": policy.name, "reason": reason, "count": n})
        if due:  # loading may take a while: never on the control path
            threading.Thread(target=self._fall_back, args=(policy, n), daemon=True).start()

    def _fall_back(self, failing: DeployedPolicy, stops: int) -> None:
        assert self.fallback is not None
        try:
            prev = self.fallback()
        except Exception as e:  # any load failure: keep running what we have, and say so
            log.error("fallback from %s failed: %s", failing.name, e)
            self.on_event("fallback_failed", {"from": failing.name, "error": str(e)})
            return
        if prev is None or prev.name == failing.name:
            self.on_event("fallback_failed", {"from": failing.name, "error": "no previous version"})
            return
        try:
            self.stage(prev, reason=f"{stops} safety stops with {failing.name}")
        except SwapError as e:
            self.on_event("fallback_failed", {"from": failing.name, "error": str(e)})
            return
        self.on_event("fallback", {"from": failing.name, "to": prev.name, "stops": stops})


class Controller:
    """One robot's session: validation, limits, watchdog and swap points around a policy."""

    def __init__(
        self,
        source: DeployedPolicy | PolicySlot,
        config: ControllerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = cfg = config or ControllerConfig()
        self.slot = (
            source
            if isinstance(source, PolicySlot)
            else PolicySlot(source, fallback_after=cfg.fallback_after)
        )
        self.clock = clock
        self.policy = self.slot.latest
        self._bind(self.policy)
        self.watchdog = Watchdog(
            self.action_dim, hold_ticks=cfg.hold_ticks, stop_action=cfg.stop_action
        )
        self.prev: np.ndarray | None = None
        self.steps = 0
        self.faults: Counter[str] = Counter()

    def _bind(self, policy: DeployedPolicy) -> None:
        self.obs_spec = policy.obs_spec  # built with the policy, not here on the control path
        self.action_dim = int(np.prod(policy.schema["action"]["shape"]))
        self.period = 1.0 / (self.config.control_hz or policy.control_hz)
        self.stale_after = self.config.stale_periods * self.period
        self.deadline = self.config.deadline_periods * self.period

    def _adopt(self) -> None:
        latest = self.slot.latest
        if latest is not self.policy:
            self.policy = latest  # same schema (PolicySlot.stage checks), so bindings still hold
            self._bind(latest)

    def reset(self) -> DeployedPolicy:
        """Episode boundary: adopt a staged policy, clear the watchdog and the rate limit."""
        self._adopt()
        self.watchdog.reset()
        self.prev = None
        self.steps = 0
        self.faults.clear()
        return self.policy

    def act(self, obs: Mapping[str, Any], *, stamp: float | None = None) -> Decision:
        """One tick. `stamp`: when the observation was taken, on this controller's clock."""
        if self.config.swap_at == "tick":
            self._adopt()  # chunk length 1: every tick boundary is between two actions
        if self.watchdog.stopped:
            return self._decision(
                self.watchdog.stop_action(),
                "stopped",
                "stopped",
                f"safety stop latched ({self.watchdog.stop_reason}); reset to continue",
            )
        bad = self.obs_spec.check(obs)
        if bad is not None:
            return self.fault(*bad)
        if stamp is not None:
            age = self.clock() - stamp
            if age > self.stale_after:
                return self.fault(
                    "stale",
                    f"observation is {age * 1e3:.1f} ms old, limit {self.stale_after * 1e3:.1f} ms ({self.config.stale_periods:g} periods)",
                )
        t0 = time.perf_counter()
        action = self.policy.runner(obs)
        took = time.perf_counter() - t0
        if took > self.deadline:
            return self.fault(
                "deadline",
                f"inference took {took * 1e3:.2f} ms, deadline {self.deadline * 1e3:.2f} ms",
                took,
            )
        if not np.isfinite(action).all():
            return self.fault(
                "nonfinite_action", f"{self.policy.name} produced a non-finite action", took
            )
        action = np.minimum(np.maximum(action, self.policy.low), self.policy.high)
        if self.prev is not None and self.config.max_delta is not None:
            d = self.config.max_delta
            action = np.minimum(np.maximum(action, self.prev - d), self.prev + d)
        action = action.astype(np.float32, copy=False)
        self.prev = action
        self.watchdog.ok(action)
        self.steps += 1
        return Decision(
            action=action, status="ok", version=self.policy.name, inference_ms=took * 1e3
        )

    def fault(self, code: str, message: str, took: float = 0.0) -> Decision:
        """A tick without a trustworthy action (also used by servers for protocol errors)."""
        self.faults[code] += 1
        was_stopped = self.watchdog.stopped
        action, status = self.watchdog.fault(f"{code}: {message}")
        if status == "stopped" and not was_stopped:
            log.warning("safety stop (%s) with %s: %s", code, self.policy.name, message)
            self.slot.report_stop(self.policy, f"{code}: {message}")
        self.steps += 1
        return self._decision(action, status, code, message, took)  # type: ignore[arg-type]

    def _decision(
        self,
        action: np.ndarray,
        status: str,
        code: str | None,
        message: str | None,
        took: float = 0.0,
    ) -> Decision:
        return Decision(
            action=action,
            status=status,
            version=self.policy.name,
            code=code,  # type: ignore[arg-type]
            message=message,
            inference_ms=took * 1e3,
        )

    def episode_report(self) -> dict[str, Any]:
        """What a finished episode says about the policy (the registry's canary evidence)."""
        return {
            "version": self.policy.name,
            "steps": self.steps,
            "safety_stops": int(self.watchdog.stopped),
            "faults": dict(self.faults),
        }
