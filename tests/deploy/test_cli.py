"""`flywheel registry | export | controller` through the command line, JSON fields included."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flywheel.cli.deploy import register

ROOT = Path(__file__).resolve().parents[2]
GATE_ARGS = ["--episodes", "30", "--min-episodes", "30", "--latency-budget-ms", "50"]


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLYWHEEL_USER", "tester@ci")
    app = typer.Typer()
    register(app)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> dict | None:
        r = runner.invoke(app, list(args))
        assert r.exit_code == code, (args, r.stdout, r.stderr, r.exception)
        return json.loads(r.stdout) if "--json" in args and r.stdout.strip() else r

    return run


def test_registry_commands_end_to_end(cli, reach_policies):
    assert cli("registry", "register", str(reach_policies["good"]), "--json")["version"] == 1
    assert cli("registry", "register", str(reach_policies["worse"]), "--json")["version"] == 2
    up = cli("registry", "promote", "1", "--to", "production", *GATE_ARGS, "--json")
    assert up["decision"] == "promoted" and {g["name"] for g in up["gates"]} == {
        "integrity",
        "evaluation",
        "latency",
    }
    down = cli("registry", "promote", "2", "--to", "production", *GATE_ARGS, "--json", code=1)
    ev = next(g for g in down["gates"] if g["name"] == "evaluation")
    assert down["decision"] == "refused" and not ev["passed"]
    assert (
        ev["figures"]["candidate"]["success_ci95"]
        and ev["figures"]["incumbent"]["success_rate"] > 0.2
    )
    listed = cli("registry", "list", "--json")
    assert [v["version"] for v in listed["versions"]] == [1, 2]
    assert listed["aliases"] == {"candidate": 2, "production": 1}

    r = cli("registry", "promote", "2", "--to", "production", "--force", *GATE_ARGS, code=2)
    assert "needs --reason" in r.stderr
    r = cli("registry", "rollback", code=2)
    assert "nothing to roll back to" in r.stderr
    r = cli(
        "registry", "promote", "2", "--to", "production", "--force", "--reason", "drill", *GATE_ARGS
    )
    assert "FORCED" in r.stderr and "--force" in r.stderr
    back = cli("registry", "rollback", "--reason", "drill over", "--json")
    assert back["production"] == 1 and back["rolled_back"] == 2
    audit = cli("registry", "audit", "--json")["entries"]
    forced = [e for e in audit if e.get("forced")]
    assert len(forced) == 1 and forced[0]["who"] == "tester@ci" and forced[0]["why"] == "drill"
    assert audit[-1]["op"] == "rollback" and audit[-1]["why"] == "drill over"
    assert cli("registry", "verify", "--json") == {"ok": True, "problems": []}

    for fmt in ("onnx", "torchscript"):
        out = cli("export", "1", "--format", fmt, "--json")
        assert out["parity"]["passed"] and out["parity"]["max_abs_diff"] <= 1e-5
        assert (
            Path(out["path"]).is_file() and out["observations"] == "recorded (evaluation rollouts)"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_controller_serve_and_run(cli, tmp_path, reach_policies):
    cli("registry", "register", str(reach_policies["good"]), "--json")
    cli("registry", "promote", "1", "--to", "production", *GATE_ARGS, "--json")
    port = _free_port()
    code = "import typer; from flywheel.cli.deploy import register; app = typer.Typer(); register(app); app()"
    env = {"FLYWHEEL_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    server = subprocess.Popen(
        [sys.executable, "-c", code, "controller", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/healthz")
                health = json.loads(c.getresponse().read())
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
                time.sleep(0.2)
        assert health["model"]["model_version"] == "v1" and health["alias"] == "production"
        out = cli(
            "controller",
            "run",
            "--task",
            "reach",
            "--server",
            f"ws://127.0.0.1:{port}/",
            "--episodes",
            "2",
            "--no-realtime",
            "--json",
        )
        assert len(out["episodes"]) == 2 and out["safety_stops"] == 0
        assert all(e["statuses"].get("ok") == e["steps"] for e in out["episodes"])
        r = cli(
            "controller",
            "run",
            "--task",
            "reach",
            "--server",
            f"ws://127.0.0.1:{port}/",
            "--expect-version",
            "v7",
            "--no-realtime",
            code=2,
        )
        assert "refusing to run" in r.stderr and "model_version" in r.stderr
    finally:
        server.terminate()
        server.wait(10)
