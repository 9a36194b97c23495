"""The watchdog: what a controller sends when it has no trustworthy new action.

On a fault (a stale or invalid observation, a missed inference deadline, no reply from the
server) the last safe action is held for a few ticks, because one late packet should not jerk
the arm to a stop; if faults go on, the watchdog latches a safe stop, which only an episode
reset clears: a robot that stopped for a reason should not start moving again by itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HOLD = None
"""A `stop_action` entry meaning "keep this dimension's last value" (e.g. a gripper that holds
an object should not open on a safety stop)."""


class Watchdog:
    """Consecutive-fault counter with hold-then-stop semantics, one per robot session."""

    def __init__(
        self, action_dim: int, *, hold_ticks: int, stop_action: Sequence[float | None] | None = None
    ) -> None:
        if stop_action is not None and len(stop_action) != action_dim:
            raise ValueError(
                f"stop_action has {len(stop_action)} entries, the action has {action_dim}"
            )
        self.action_dim = action_dim
        self.hold_ticks = hold_ticks
        self.template = list(stop_action) if stop_action is not None else [0.0] * action_dim
        self.last_safe: np.ndarray | None = None
        self.faults = 0
        self.stopped = False
        self.stop_reason: str | None = None
        self.safety_stops = 0

    def reset(self) -> None:
        """A new episode: forget the last action and clear a latched stop."""
        self.last_safe = None
        self.faults = 0
        self.stopped = False
        self.stop_reason = None

    def ok(self, action: np.ndarray) -> None:
        """A good action went out: it becomes the one to hold on the next fault."""
        self.last_safe = action
        self.faults = 0

    def stop_action(self) -> np.ndarray:
        last = self.last_safe
        return np.array(
            [
                (0.0 if last is None else float(last[i])) if v is HOLD else float(v)
                for i, v in enumerate(self.template)
            ],
            np.float32,
        )

    def fault(self, reason: str) -> tuple[np.ndarray, str]:
        """(action, status) after a fault: `hold` for hold_ticks faults in a row, then `stopped`."""
        if self.stopped:
            return self.stop_action(), "stopped"
        self.faults += 1
        if self.faults > self.hold_ticks:
            self.stopped = True
            self.stop_reason = reason
            self.safety_stops += 1
            return self.stop_action(), "stopped"
        if self.last_safe is None:
            return self.stop_action(), "hold"
        return self.last_safe.copy(), "hold"
