"""`flywheel serve`: a real local Prefect server, and the flywheel's deployments served on it.

The ephemeral server runs no scheduler, so schedules and event triggers need a real one:
`prefect server start` on loopback with SQLite under `$FLYWHEEL_HOME/prefect`, analytics off,
started once and reused. Deployments:
- `retrain`: nightly cron, and the `flywheel.retrain.due` event, emitted when enough new
  episodes have arrived since the last retrain (threshold configurable); concurrency 1;
- `refine`: triggered by `flywheel.retrain.completed`; `deploy`: by `flywheel.refine.completed`
  (the chain passes state through files under `$FLYWHEEL_HOME/state`, not through parameters);
- `ingest`: every `drop_interval_s`, the drop folder `$FLYWHEEL_HOME/drop` into the corpus;
- `collect`: on demand.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_PORT = 4207


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """What the served deployments do and when."""

    tasks: tuple[str, ...] = ("lift",)
    """Tasks the flywheel works on."""
    retrain_cron: str = "0 2 * * *"
    """Scheduled retrain (nightly at 02:00 by default)."""
    retrain_threshold: int = 200
    """New episodes (all tasks) since the last retrain that trigger one early."""
    port: int = DEFAULT_PORT
    """Loopback port of the Prefect server."""
    steps: int = 2000
    """Gradient steps per offline stage of a retrain."""
    online_steps: int = 40_000
    """Online env-step budget of a refine."""
    eval_episodes: int = 50
    """Evaluation episodes per policy."""
    drop_interval_s: int = 300
    """How often the `ingest` deployment scans the drop folder `$FLYWHEEL_HOME/drop`."""


def _server_file(home: Path) -> Path:
    return home / "prefect" / "server.json"


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True when a Prefect API answers at `api_url`."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def server_status(home: Path) -> dict[str, Any] | None:
    """The running server's record, or None."""
    f = _server_file(home)
    if not f.exists():
        return None
    info = json.loads(f.read_text())
    return info if healthy(info["api_url"]) else None


def start_server(home: Path, port: int = DEFAULT_PORT, timeout: float = 90.0) -> str:
    """Start (or reuse) the local server; returns its API URL."""
    running = server_status(home)
    if running is not None:
        return running["api_url"]
    api_url = f"http://127.0.0.1:{port}/api"
    if healthy(api_url):  # someone else's server on our port: refuse to share silently
        raise RuntimeError(
            f"a Prefect server already answers at {api_url} but is not ours; use --port"
        )
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    log = open(home / "prefect" / "server.log", "ab")  # noqa: SIM115 - the server keeps it
    proc = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + timeout
    while not healthy(api_url):
        if proc.poll() is not None or time.time() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # never leave a half-started server behind
            raise RuntimeError(
                f"Prefect server did not start; see {home / 'prefect' / 'server.log'}"
            )
        time.sleep(0.5)
    _server_file(home).write_text(json.dumps({"pid": proc.pid, "port": port, "api_url": api_url}))
    return api_url


def stop_server(home: Path) -> bool:
    """Stop the server (and a serving process) started by `flywheel serve`."""
    stopped = False
    for name in ("serve.json", "server.json"):
        f = home / "prefect" / name
        if f.exists():
            pid = json.loads(f.read_text())["pid"]
            try:
                os.killpg(pid, signal.SIGTERM)
                stopped = True
            except ProcessLookupError:
                pass
            f.unlink()
    return stopped


def deployments(home: Path, cfg: ServeConfig) -> list[Any]:
    """The flywheel's deployments with schedules and triggers."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from pipelines import chain

    common = {"home": str(home), "tasks": list(cfg.tasks)}
    sizes = {"eval_episodes": cfg.eval_episodes}

    def trig(event: str) -> list[DeploymentEventTrigger]:
        return [DeploymentEventTrigger(expect={event}, match={"prefect.resource.id": "flywheel.*"})]

    return [
        chain.retrain_latest.to_deployment(
            name="retrain",
            cron=cfg.retrain_cron,
            parameters={**common, **sizes, "steps": cfg.steps},
            concurrency_limit=1,
            triggers=trig("flywheel.retrain.due"),
        ),
        chain.refine_latest.to_deployment(
            name="refine",
            parameters={"home": str(home), "online_steps": cfg.online_steps, **sizes},
            concurrency_limit=1,
            triggers=trig("flywheel.retrain.completed"),
        ),
        chain.deploy_latest.to_deployment(
            name="deploy",
            parameters={"home": str(home)},
            triggers=trig("flywheel.refine.completed"),
        ),
        chain.ingest_flow.to_deployment(
            name="ingest",
            interval=cfg.drop_interval_s,
            parameters={
                "home": str(home),
                "drop": str(home / "drop"),
                "threshold": cfg.retrain_threshold,
            },
        ),
        chain.collect_and_count.to_deployment(
            name="collect", parameters={**common, "threshold": cfg.retrain_threshold}
        ),
    ]


def serve(home: Path, cfg: ServeConfig) -> None:
    """Start/reuse the server, then serve the deployments (blocks until stopped)."""
    from prefect import serve as prefect_serve

    (home / "prefect" / "serve.json").write_text(
        json.dumps({"pid": os.getpid(), "config": asdict(cfg)})
    )
    prefect_serve(*deployments(home, cfg), print_starting_message=False)


def status(home: Path) -> dict[str, Any]:
    """api_url and the deployments with their schedules (from the server)."""
    info = server_status(home)
    if info is None:
        return {"running": False, "api_url": None, "deployments": []}
    from prefect.client.orchestration import get_client

    async def read() -> list[dict[str, Any]]:
        async with get_client() as client:
            deps = await client.read_deployments()
            return [
                {
                    "name": d.name,
                    "schedules": [
                        getattr(s.schedule, "cron", None) or str(s.schedule) for s in d.schedules
                    ],
                    "concurrency_limit": d.concurrency_limit
                    or getattr(d.global_concurrency_limit, "limit", None),
                }
                for d in deps
            ]

    import asyncio

    return {"running": True, "api_url": info["api_url"], "deployments": asyncio.run(read())}
