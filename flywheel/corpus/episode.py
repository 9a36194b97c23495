"""An episode in memory: what a writer hands to the corpus, validated before anything is written.

Shape glossary (T = number of steps, so there are T+1 observations: the final one is kept):
    obs[k]       (T+1, *shape_k)   low-dim observations
    images[c]    (T+1, H, W[, C])  uint8 RGB camera frames
    extras[k]    (T+1, *shape_k)   per-step data not used for training (e.g. MuJoCo state)
    action       (T, A)
    reward       (T,)
    terminated   (T,) bool         the task ended (success or failure): no bootstrap
    truncated    (T,) bool         the time limit or an operator cut the episode: bootstrap
    timestamp    (T+1,) float64    seconds since the episode's start, one per observation
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from flywheel.corpus.errors import BadEpisodeError
from flywheel.corpus.schema import SCHEMA_VERSION, check_label, check_name, check_version
from flywheel.corpus.stats import KeyStats

Source = Literal["sim", "real", "online"]
SOURCES: tuple[str, ...] = ("sim", "real", "online")


@dataclass(frozen=True, kw_only=True)
class EpisodeMeta:
    """Who produced an episode, on what, and how it went."""

    source: Source
    """`sim` (scripted or policy rollouts), `real` (robot recordings), `online` (RL refinement)."""
    task: str
    """Task name, e.g. `lift`."""
    robot: str
    """Robot (or sim robot model) name."""
    control_hz: float
    """Control rate the actions were issued at."""
    success: bool | None = None
    """Task outcome; None when unknown (e.g. an unlabelled real demonstration)."""
    policy_version: str | None = None
    """Policy that acted (`expert`, a registry version), None for human operators."""
    operator: str | None = None
    """Human operator for teleoperated demonstrations."""
    info: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON: seed, noise level, randomisation draw, language instruction, ..."""
    source_hash: str | None = None
    """Hash of the source content; computed from the arrays when not given (ingest gives it)."""


@dataclass(kw_only=True)
class Episode:
    """One attempt at one task, as arrays; see the module docstring for shapes."""

    obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    timestamp: np.ndarray
    meta: EpisodeMeta
    images: dict[str, np.ndarray] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION

    @property
    def length(self) -> int:
        """Number of steps T."""
        return int(np.shape(self.action)[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array by its path in the episode group (`obs/x`, `images/front`, `action`, ...)."""
        out: dict[str, np.ndarray] = {f"obs/{k}": v for k, v in self.obs.items()}
        out.update({f"images/{k}": v for k, v in self.images.items()})
        out.update({f"extras/{k}": v for k, v in self.extras.items()})
        out.update(
            action=self.action,
            reward=self.reward,
            terminated=self.terminated,
            truncated=self.truncated,
            timestamp=self.timestamp,
        )
        return out


def new_episode_id(created: float | None = None) -> str:
    """Sortable, unique id: UTC time to the microsecond, then 48 random bits."""
    t = datetime.fromtimestamp(time.time() if created is None else created, tz=UTC)
    return f"{t:%Y%m%dT%H%M%S%f}Z-{os.urandom(6).hex()}"


def _label(ep: Episode) -> str:
    """How an episode is named in errors before it has an id."""
    m = ep.meta
    hint = m.info.get("source_file") or m.info.get("seed")
    return f"{m.source}/{m.task}" + (f" ({hint})" if hint is not None else "")


def validate(ep: Episode) -> Episode:
    """Check everything that could make a stored episode wrong; return it with canonical dtypes.

    Raises BadEpisodeError naming the episode, the key and the reason. Nothing is written before
    this passes, so a bad episode never leaves a trace in the corpus.
    """
    name = _label(ep)
    try:
        check_version(ep.schema_version, where=f"episode {name}")
    except Exception as e:
        raise BadEpisodeError(name, "schema_version", str(e)) from None
    m = ep.meta
    if m.source not in SOURCES:
        raise BadEpisodeError(name, "meta.source", f"{m.source!r} is not one of {SOURCES}")
    check_label(m.task, episode=name, key="meta.task")
    check_label(m.robot, episode=name, key="meta.robot")
    for key in ("policy_version", "operator"):
        if getattr(m, key) is not None:
            check_label(getattr(m, key), episode=name, key=f"meta.{key}")
    if m.success not in (True, False, None):
        raise BadEpisodeError(name, "meta.success", f"{m.success!r} is not true, false or null")
    if not (isinstance(m.control_hz, int | float) and math.isfinite(m.control_hz)) or (
        m.control_hz <= 0
    ):
        raise BadEpisodeError(name, "meta.control_hz", f"{m.control_hz!r} is not a positive rate")
    try:
        json.dumps(m.info, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise BadEpisodeError(name, "meta.info", f"not JSON-serialisable: {e}") from None
    if not ep.obs and not ep.images:
        raise BadEpisodeError(name, "obs", "missing: an episode needs at least one observation")

    action = _array(name, "action", ep.action, "f", ndim_min=2)
    T = action.shape[0]
    if T == 0:
        raise BadEpisodeError(name, "action", "zero-length episode (no steps)")
    out = Episode(
        obs={},
        images={},
        extras={},
        action=action.astype(np.float32, copy=False),
        reward=_steps(name, "reward", _array(name, "reward", ep.reward, "f", ndim_min=1), T),
        terminated=_steps(name, "terminated", _array(name, "terminated", ep.terminated, "b"), T),
        truncated=_steps(name, "truncated", _array(name, "truncated", ep.truncated, "b"), T),
        timestamp=_steps(name, "timestamp", _array(name, "timestamp", ep.timestamp, "f"), T + 1),
        meta=ep.meta,
        schema_version=ep.schema_version,
    )
    out.reward = out.reward.astype(np.float32, copy=False)
    out.timestamp = out.timestamp.astype(np.float64, copy=False)
    if out.reward.ndim != 1 or out.terminated.ndim != 1 or out.truncated.ndim != 1:
        raise BadEpisodeError(name, "reward", "reward, terminated and truncated must be (T,)")
    if np.any(np.diff(out.timestamp) <= 0):
        i = int(np.argmax(np.diff(out.timestamp) <= 0))
        raise BadEpisodeError(name, "timestamp", f"not strictly increasing at step {i + 1}")
    for group, src, dst, kind in (
        ("obs", ep.obs, out.obs, "fiub"),
        ("images", ep.images, out.images, "u"),
        ("extras", ep.extras, out.extras, "fiub"),
    ):
        for k, v in src.items():
            check_name(k, episode=name, key=f"{group}/{k}")
            a = _steps(name, f"{group}/{k}", _array(name, f"{group}/{k}", v, kind), T + 1)
            if group == "images" and (a.dtype != np.uint8 or a.ndim not in (3, 4)):
                raise BadEpisodeError(
                    name, f"images/{k}", f"expected uint8 (T+1, H, W[, C]), got {a.dtype} {a.shape}"
                )
            dst[k] = a
    return out


def _array(name: str, key: str, value: object, kinds: str, ndim_min: int = 1) -> np.ndarray:
    """Coerce to ndarray and check dtype kind and finiteness; the message names the key."""
    if value is None:
        raise BadEpisodeError(name, key, "missing")
    try:
        a = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise BadEpisodeError(name, key, f"not an array: {e}") from None
    if a.dtype.kind not in kinds:
        want = {"f": "float", "i": "int", "u": "uint", "b": "bool"}
        names = "/".join(want[k] for k in kinds)
        raise BadEpisodeError(name, key, f"wrong dtype {a.dtype} (expected {names})")
    if a.ndim < ndim_min:
        raise BadEpisodeError(name, key, f"expected at least {ndim_min} dims, got shape {a.shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise BadEpisodeError(name, key, f"NaN or inf at index {tuple(int(i) for i in bad)}")
    return a


def _steps(name: str, key: str, a: np.ndarray, expected: int) -> np.ndarray:
    if a.ndim == 0 or a.shape[0] != expected:
        got = a.shape[0] if a.ndim else "a scalar"
        raise BadEpisodeError(
            name, key, f"length {got} does not match the episode ({expected} expected)"
        )
    return a


def content_hash(ep: Episode) -> str:
    """sha256 over the arrays and the identifying metadata: the same content gives the same hash.

    Created time and free-form info are left out on purpose: re-writing the same recording later
    must be recognised as a duplicate.
    """
    h = hashlib.sha256()
    m = ep.meta
    h.update(json.dumps([m.source, m.task, m.robot, m.control_hz]).encode())
    for key, a in sorted(ep.arrays().items()):
        a = np.ascontiguousarray(a)
        h.update(f"{key}|{a.dtype.str}|{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return "sha256:" + h.hexdigest()


def episode_stats(ep: Episode) -> dict[str, KeyStats]:
    """Per-key statistics of the arrays a normaliser needs (low-dim obs, action, reward)."""
    out = {f"obs/{k}": KeyStats.of(v) for k, v in ep.obs.items()}
    out["action"] = KeyStats.of(ep.action)
    out["reward"] = KeyStats.of(ep.reward)
    return out
