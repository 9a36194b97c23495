"""Mapping files (TOML or YAML): which recorded topic is which observation, camera and action.

A ROS 2 bag has no notion of "observation" or "action"; the person who set up the recorder does.
A small file says it once per robot setup, so the bag itself needs no conventions:

    control_hz = 30.0
    [obs.joint_pos]
    topic = "/joint_states"
    field = "position"
    [images.front]
    topic = "/camera/front/image_raw"
    latency_s = 0.03
    [action]
    topic = "/arm/command"
    [episodes]
    topic = "/episode"

See docs/ingest.md for every key.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flywheel.ingest.config import as_name
from flywheel.ingest.errors import MappingError

TIME_SOURCES = ("header", "log")


@dataclass(frozen=True, kw_only=True)
class TopicMap:
    """One recorded topic feeding one corpus key."""

    topic: str
    """ROS topic name, e.g. `/joint_states`."""
    field: str | None = None
    """Message field to read: `position`/`velocity`/`effort` of a JointState, `data` of a
    Float64MultiArray, or a dotted path (`twist.linear`); None for the type's natural vector."""
    joints: tuple[str, ...] | None = None
    """JointState joint names to keep, in this order (messages may list joints in any order)."""
    latency_s: float = 0.0
    """Seconds the stamps lag the moment the sample describes; subtracted before alignment."""
    time: str | None = None
    """`header` (the sensor's stamp) or `log` (when the recorder received it); default: the
    mapping's `time`."""
    rate_hz: float | None = None
    """Nominal rate, for staleness; estimated from the stamps when absent."""


@dataclass(frozen=True, kw_only=True)
class Mapping:
    """A parsed mapping file."""

    path: str
    control_hz: float
    """The control grid's rate: every stream is resampled onto it."""
    obs: dict[str, TopicMap]
    """Low-dim observation key -> topic."""
    images: dict[str, TopicMap]
    """Camera name -> Image or CompressedImage topic."""
    action: TopicMap
    """The (user-named) topic the actions were published on."""
    reward: TopicMap | None = None
    """Optional reward topic (std_msgs Float32/Float64)."""
    episode_topic: str | None = None
    """std_msgs/String markers `start`, `end`, `end success`, `end failure`; without it the
    whole bag is one episode."""
    time: str = "header"
    """Default clock: sensor `header` stamps where a message has them, else `log` time."""
    task: str | None = None
    robot: str | None = None
    operator: str | None = None
    instruction: str | None = None
    """Language instruction, kept in the episode's info."""
    success: bool | None = None
    """Outcome for bags whose end marker does not say."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Unrecognised top-level keys, kept in info (a recorder's notes)."""

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


def _topic(where: str, d: Any) -> TopicMap:
    if isinstance(d, str):
        d = {"topic": d}
    if not isinstance(d, dict) or not isinstance(d.get("topic"), str):
        raise MappingError(f"{where}: needs a `topic` string (got {d!r})")
    allowed = {"topic", "field", "joints", "latency_s", "time", "rate_hz"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    time = d.get("time")
    if time is not None and time not in TIME_SOURCES:
        raise MappingError(f"{where}.time: {time!r} is not one of {TIME_SOURCES}")
    joints = d.get("joints")
    try:
        return TopicMap(
            topic=d["topic"],
            field=d.get("field"),
            joints=tuple(str(j) for j in joints) if joints is not None else None,
            latency_s=float(d.get("latency_s", 0.0)),
            time=time,
            rate_hz=float(d["rate_hz"]) if d.get("rate_hz") is not None else None,
        )
    except (TypeError, ValueError) as e:
        raise MappingError(f"{where}: {e}") from None


def _section(where: str, d: Any) -> dict[str, TopicMap]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise MappingError(f"{where}: must be a table of name -> topic")
    out = {}
    for k, v in d.items():
        if as_name(k) != k:
            raise MappingError(f"{where}.{k}: use letters, digits and '_' (e.g. {as_name(k)!r})")
        out[k] = _topic(f"{where}.{k}", v)
    return out


def parse_mapping(data: dict[str, Any], path: str = "<mapping>") -> Mapping:
    """A mapping from its parsed TOML/YAML document; MappingError names the bad key."""
    if not isinstance(data, dict):
        raise MappingError(f"{path}: the document must be a table")
    known = {
        "control_hz", "obs", "images", "action", "reward", "episodes", "time", "task",
        "robot", "operator", "instruction", "success",
    }  # fmt: skip
    if "control_hz" not in data:
        raise MappingError(f"{path}: `control_hz` is required (the control grid's rate)")
    if "action" not in data:
        raise MappingError(f"{path}: `[action]` is required (the topic the actions were sent on)")
    try:
        hz = float(data["control_hz"])
    except (TypeError, ValueError):
        raise MappingError(f"{path}: control_hz {data['control_hz']!r} is not a number") from None
    if not hz > 0:
        raise MappingError(f"{path}: control_hz must be positive")
    time = data.get("time", "header")
    if time not in TIME_SOURCES:
        raise MappingError(f"{path}: time {time!r} is not one of {TIME_SOURCES}")
    episodes = data.get("episodes") or {}
    if isinstance(episodes, str):
        episodes = {"topic": episodes}
    success = data.get("success")
    if success not in (True, False, None):
        raise MappingError(f"{path}: success must be true, false or absent")
    m = Mapping(
        path=path,
        control_hz=hz,
        obs=_section(f"{path}: obs", data.get("obs")),
        images=_section(f"{path}: images", data.get("images")),
        action=_topic(f"{path}: action", data["action"]),
        reward=_topic(f"{path}: reward", data["reward"]) if data.get("reward") else None,
        episode_topic=episodes.get("topic"),
        time=time,
        task=data.get("task"),
        robot=data.get("robot"),
        operator=data.get("operator"),
        instruction=data.get("instruction"),
        success=success,
        extra={k: v for k, v in data.items() if k not in known},
    )
    if not m.obs and not m.images:
        raise MappingError(
            f"{path}: map at least one observation (`[obs.NAME]` or `[images.NAME]`)"
        )
    return m


def load_mapping(path: str | Path) -> Mapping:
    """Read a `.toml`, `.yaml` or `.yml` mapping file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise MappingError(f"{p}: cannot read the mapping file: {e}") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
    except Exception as e:  # tomllib and yaml each raise their own parse errors
        raise MappingError(f"{p}: not valid {p.suffix.lstrip('.') or 'TOML'}: {e}") from None
    return parse_mapping(data, str(p))
