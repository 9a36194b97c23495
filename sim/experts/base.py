"""Scripted experts: closed-loop state machines over the privileged low-dim observation.

One knob, `noise` in [0, 1], turns a clean expert into a realistic, mixed-quality operator:

* aim error: every approach aims at the object plus a Gaussian offset (std `aim_std * noise`),
  so grasps sometimes miss or catch the object off-centre;
* action jitter: temporally correlated Gaussian noise on the motion command (an AR(1)
  process, std `jitter_std * noise`), like a shaky hand on a spacemouse;
* hesitations: with probability `hesitate_prob * noise` per step the expert freezes for a few
  steps (motion zero, gripper held);
* sloppiness: phase-switch tolerances widen with noise, so the expert commits earlier.

A plan that wants the arm held still (pick-and-place's final hold) sets `steady`: an operator
who lets go of the spacemouse sends exactly zero, so neither jitter nor hesitation applies.

Misses are not faked: the experts check the outcome (is the jaw closed on nothing? is the cube
following the hand?) and re-grasp, so noisy demos contain real recoveries, and whether an
episode succeeded is decided by the task's success test, never by the expert.
At noise 0 everything above is off and the experts are deterministic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from sim.control import ControlConfig

DEFAULT_NOISE = 0.6
"""Noise level used for "realistic" demos: mixed quality (see docs/sim.md for the measured
success rates), with hesitations, misses and re-grasps in many episodes."""


@dataclass(frozen=True, kw_only=True)
class ExpertNoise:
    """How the single `noise` level maps onto the kinds of imperfection (values at noise 1)."""

    aim_std: float = 0.022
    """Std (m) of the per-attempt aiming offset in x and y."""
    jitter_std: float = 0.5
    """Std of the correlated action noise (action units)."""
    jitter_corr: float = 0.8
    """AR(1) coefficient of the action noise: higher is smoother, slower drift."""
    hesitate_prob: float = 0.06
    """Per-step probability of starting a hesitation."""
    hesitate_steps: tuple[int, int] = (2, 8)
    """Range of a hesitation's length (control steps)."""
    tolerance_scale: float = 1.5
    """Phase tolerances are multiplied by (1 + tolerance_scale * noise)."""


class Expert(ABC):
    """Base class: noise machinery and motion helpers; subclasses implement `plan`."""

    task: str = ""

    def __init__(
        self,
        noise: float = 0.0,
        *,
        seed: int | None = None,
        control: ControlConfig | None = None,
        noise_model: ExpertNoise | None = None,
    ) -> None:
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        self.noise = float(noise)
        self.max_delta = (control or ControlConfig()).max_delta
        self.noise_model = noise_model or ExpertNoise()
        self.reset(seed)

    # ------------------------------------------------------------------ public

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode; `seed` fixes the expert's own noise stream."""
        self.rng = np.random.default_rng(seed)
        self.phase = "start"
        self.phase_steps = 0
        self.attempts = 0
        self.hold_steps = 0
        self.grip = -1.0
        self.steady = False
        self._jitter = np.zeros(3)
        self._hesitate = 0
        self.aim = self._new_aim()
        self.on_reset()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The action (4,) float32 for one observation (unbatched)."""
        nm, level = self.noise_model, self.noise
        self.steady = False
        move, grip = self.plan(obs)
        self.phase_steps += 1
        self.grip = grip
        if level > 0.0 and self.steady:  # hands off the controls: the command is exact
            self._jitter[:] = 0.0
            self._hesitate = 0
        elif level > 0.0:
            if self._hesitate > 0:
                self._hesitate -= 1
                move = np.zeros(3)
            elif self.rng.random() < nm.hesitate_prob * level:
                lo, hi = nm.hesitate_steps
                self._hesitate = int(self.rng.integers(lo, hi + 1))
            self._jitter = nm.jitter_corr * self._jitter + np.sqrt(
                1 - nm.jitter_corr**2
            ) * self.rng.normal(0.0, nm.jitter_std * level, 3)
            move = move + self._jitter
        action = np.empty(4, np.float32)
        action[:3] = np.clip(move, -1.0, 1.0)
        action[3] = grip
        return action

    # ------------------------------------------------------------------ for subclasses

    def on_reset(self) -> None:
        """Per-episode state of a subclass: an optional hook, nothing to reset by default."""
        return None

    @abstractmethod
    def plan(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        """Clean (motion (3,), gripper) for this observation; may change self.phase and set
        self.steady (this step's command is exact: no jitter, no hesitation)."""

    def goto(self, phase: str) -> None:
        self.phase = phase
        self.phase_steps = 0

    def tol(self, base: float) -> float:
        """A phase-switch tolerance, loosened by noise (a hurried operator)."""
        return base * (1.0 + self.noise_model.tolerance_scale * self.noise)

    def toward(self, ee: np.ndarray, target: np.ndarray, speed: float = 1.0) -> np.ndarray:
        """Motion command (3,) that closes the gap to `target`, saturating at `speed`."""
        delta = (np.asarray(target, np.float64) - ee) / self.max_delta
        norm = float(np.max(np.abs(delta)))
        return delta * (speed / norm) if norm > speed else delta

    def retry(self, phase: str = "start") -> None:
        """Give up the current attempt: re-aim and start over from `phase`."""
        self.attempts += 1
        self.aim = self._new_aim()
        self.goto(phase)

    def _new_aim(self) -> np.ndarray:
        offset = np.zeros(3)
        if self.noise > 0.0:
            offset[:2] = self.rng.normal(0.0, self.noise_model.aim_std * self.noise, 2)
        return offset


class BatchExpert:
    """N experts behind one batched call: obs dict of (N, ...) arrays -> actions (N, 4).

    This is the batched-policy protocol the vector env and collection use: `reset(i, seed)`
    starts a new episode in slot i, `__call__(obs)` acts for every slot at once.
    """

    def __init__(self, experts: list[Expert]) -> None:
        self.experts = experts

    def reset(self, index: int, seed: int | None = None) -> None:
        self.experts[index].reset(seed)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        keys = [k for k, v in obs.items() if v.ndim <= 2]  # low-dim only; images unused
        out = np.empty((len(self.experts), 4), np.float32)
        for i, expert in enumerate(self.experts):
            out[i] = expert.act({k: obs[k][i] for k in keys})
        return out
