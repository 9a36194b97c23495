"""Checkpoint files of training runs: atomic to write, safe to read.

A run killed at any moment leaves either the previous checkpoint or the new one, never half of
one (written beside, then renamed). Reading uses `weights_only=True`: tensors, numbers, strings
and containers only, so a planted checkpoint cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none."""
    if not path.exists():
        return None
    return torch.load(path, weights_only=True)
