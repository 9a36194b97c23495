"""What a user chooses when ingesting: format, identity overrides, image size, alignment rules."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flywheel.ingest.alignment import AlignmentConfig

FORMATS: tuple[str, ...] = ("auto", "lerobot", "mcap", "hdf5", "dir")


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """How sources become corpus episodes. Saved in every ingested episode's info."""

    format: str = "auto"
    """`auto` detects each source; or `lerobot`, `mcap`, `hdf5`, `dir` for all of them."""
    task: str | None = None
    """Corpus task name; default: the source's own (mapping, metadata) or its folder name."""
    robot: str | None = None
    """Robot id; default: what the source records (LeRobot `robot_type`, metadata), else
    `unknown`."""
    operator: str | None = None
    """Operator, when the source does not record one."""
    control_hz: float | None = None
    """Control rate for sources that do not state one (robomimic files without env args)."""
    image_size: tuple[int, int] | None = None
    """(height, width) for cameras the corpus has not declared yet; None keeps the source size.
    A camera the corpus already declares is always resized to the declared size."""
    mapping: Path | None = None
    """TOML/YAML mapping file: required for ROS 2 bags (other formats ignore it)."""
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    """Resampling and stale-tick rules."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r} is not one of {FORMATS}")
        if self.control_hz is not None and not self.control_hz > 0:
            raise ValueError(f"control_hz must be positive, got {self.control_hz}")
        for name in ("task", "robot", "operator"):
            v = getattr(self, name)
            if v is not None and as_label(v, default="") != v:
                raise ValueError(
                    f"{name} {v!r} is not a corpus label: use letters, digits and _ . : @ + - "
                    f"(e.g. {as_label(v)!r})"
                )
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ValueError(f"image_size must be (height, width) > 0, got {self.image_size}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["mapping"] = str(self.mapping) if self.mapping else None
        return json.loads(json.dumps(d, default=str))


def parse_size(text: str) -> tuple[int, int]:
    """`224x224` or `240x320` (height x width) -> (h, w)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"image size {text!r} is not HEIGHTxWIDTH, e.g. 240x320")
    return int(m.group(1)), int(m.group(2))


_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.:@+-]+")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_]+")


def as_label(text: str, default: str = "unknown") -> str:
    """A free-form name (dataset folder, robot type) as a corpus label (task, robot)."""
    s = _NOT_LABEL.sub("_", str(text)).replace("..", "_").strip("_.:@+-")
    return s[:128] or default


def as_name(text: str) -> str:
    """A source field name (`observation.images.front`) as a corpus key (`front`-style)."""
    s = _NOT_NAME.sub("_", str(text)).strip("_")
    if not s or not s[0].isalpha():
        s = "k_" + s
    return s[:64]
