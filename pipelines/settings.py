"""Prefect settings for the embedded default, applied before `prefect` is first imported.

Prefect reads its settings once, at import: PREFECT_HOME goes under FLYWHEEL_HOME so a whole
flywheel is one folder, and telemetry is off (the machines here are offline; the server would
otherwise log failed heartbeats into every run).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def configure(home: Path, *, api_url: str | None = None) -> None:
    """Set Prefect's environment for this process (and the processes it starts)."""
    if "prefect" in sys.modules and os.environ.get("PREFECT_HOME") != str(home / "prefect"):
        raise RuntimeError("pipelines.settings.configure() must run before prefect is imported")
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    # the ephemeral server's default 20 s start-up limit failed `flywheel run` on a busy 2-core
    # machine (it migrates its database first); waiting longer costs nothing when it is quick
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if api_url is not None:
        os.environ["PREFECT_API_URL"] = api_url
    (home / "prefect").mkdir(parents=True, exist_ok=True)
