"""The format registry and `--format auto` detection: a plain dict, checked in a fixed order."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from flywheel.ingest import directory, hdf5, lerobot, ros2_bag

ADAPTERS: dict[str, ModuleType] = {
    "lerobot": lerobot,
    "mcap": ros2_bag,
    "hdf5": hdf5,
    "dir": directory,
}
"""Format name -> adapter module (`detect(path)`, `episodes(path, ctx)`).

Order matters for detection: the most specific layouts first (a LeRobot root or a ROS bag
folder may also hold files the plain-directory check would accept)."""


def detect_format(path: Path) -> str | None:
    """The format of `path`, or None when no adapter recognises it."""
    for fmt, adapter in ADAPTERS.items():
        try:
            if adapter.detect(path):
                return fmt
        except OSError:  # unreadable: no adapter can claim it
            return None
    return None


def describe(path: Path) -> str:
    """Why detection failed, for the quarantine reason."""
    if not path.exists():
        return "missing: no such file or folder"
    if path.is_file():
        return (
            f"unrecognised file type {path.suffix or '(no suffix)'}: expected a LeRobot dataset "
            "folder, .mcap, .h5/.hdf5, or an episode folder with episode.json"
        )
    return (
        "unrecognised folder: no meta/info.json (LeRobot), *.mcap (ROS 2 bag), trajectory.h5 "
        "(DROID-style) or episode.json (plain directory)"
    )
