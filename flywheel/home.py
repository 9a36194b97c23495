"""Where flywheel keeps its files: one root (`FLYWHEEL_HOME`) so a whole flywheel is one folder."""

from __future__ import annotations

import os
from pathlib import Path


def flywheel_home() -> Path:
    """The root folder for corpus, registry and runs; `$FLYWHEEL_HOME`, default `./.flywheel`."""
    return Path(os.environ.get("FLYWHEEL_HOME", ".flywheel"))


def default_corpus_path() -> Path:
    """The corpus used when a command is given no `--corpus`."""
    return flywheel_home() / "corpus.zarr"
