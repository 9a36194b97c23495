"""A real local Prefect server: cron deployments get scheduled runs; the episode-count trigger
starts a retrain that chains into refine and deploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sim")

from tests.pipelines.local_net import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _fw(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLYWHEEL_HOME": str(home)}
    for k in ("PREFECT_HOME", "PREFECT_API_URL"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "flywheel.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)  # fmt: skip


@pytest.mark.slow
def test_serve_schedules_cron_runs_and_chains_trigger_to_deploy(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    from sim.collect import collect

    collect("reach", 16, noise=0.3, seed=0, corpus_path=home / "corpus.zarr")
    env = {**os.environ, "FLYWHEEL_HOME": str(home)}
    for k in ("PREFECT_HOME", "PREFECT_API_URL"):
        env.pop(k, None)
    args = ["serve", "--tasks", "reach", "--port", str(port), "--retrain-cron", "*/5 * * * *",
            "--retrain-threshold", "10", "--steps", "100", "--online-steps", "512", "--eval-episodes", "4"]  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "flywheel.cli", *args], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:

        def deployments():
            r = _fw(home, "serve", "--status", "--json")
            if r.returncode != 0:
                return None
            out = json.loads(r.stdout)
            return out if len(out["deployments"]) == 5 else None

        status = wait_for(deployments, 240, "five deployments")
        assert status["api_url"] == f"http://127.0.0.1:{port}/api"
        by_name = {d["name"]: d for d in status["deployments"]}
        assert by_name["retrain"]["schedules"] == ["*/5 * * * *"]
        assert by_name["retrain"]["concurrency_limit"] == 1
        api = status["api_url"]

        def scheduled_runs():
            code = (
                "import asyncio, json\n"
                "from prefect.client.orchestration import get_client\n"
                "async def main():\n"
                "    async with get_client() as c:\n"
                "        runs = await c.read_flow_runs()\n"
                "        print(json.dumps([[r.name, str(r.state_type), r.deployment_id is not None, r.flow_id.hex] for r in runs]))\n"
                "asyncio.run(main())\n"
            )
            e = {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(home / "prefect")}
            r = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=60
            )
            return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else []

        runs = wait_for(
            lambda: [r for r in scheduled_runs() if "SCHEDULED" in r[1]], 120, "scheduled cron runs"
        )
        assert runs
        # enough new episodes -> flywheel.retrain.due -> retrain -> refine -> deploy
        code = (
            "from pipelines.chain import note_new_episodes\n"
            f"print(note_new_episodes({str(home)!r}, {{'reach': 12}}, 10))\n"
        )
        e = {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(home / "prefect")}
        r = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=e,
            cwd=ROOT,
            timeout=120,
        )
        assert r.returncode == 0 and r.stdout.strip().endswith("True"), r.stderr[-2000:]
        deployed = wait_for(
            lambda: (home / "state" / "deployed.json").exists(), 600, "the chained deploy"
        )
        assert deployed
        chosen = json.loads((home / "state" / "deployed.json").read_text())
        assert Path(chosen["reach"]["bundle"]).is_dir()
        assert (home / "state" / "retrain.json").exists() and (
            home / "state" / "refine.json"
        ).exists()
    finally:
        server.terminate()
        server.wait(timeout=30)
        stop = _fw(home, "serve", "--stop", "--json")
        assert stop.returncode == 0
