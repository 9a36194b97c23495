"""Prefect server on PostgreSQL, a process work pool, a worker, and a retrain through the pool."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("sim")

from pipelines.serve import start_server, stop_server
from tests.pipelines.local_net import free_port

ROOT = Path(__file__).resolve().parents[2]


def _pg_bin() -> Path | None:
    """The folder with initdb, pg_ctl and createdb (Debian keeps them out of PATH)."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if versions:
        return Path(versions[-1]).parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("createdb") else None


def _as_postgres(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user when we are root."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture
def postgres(tmp_path):
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (apt-get install postgresql to run this test)"
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as a non-root user")
    base = Path(tempfile.mkdtemp(prefix="fw-pg-"))  # pytest's tmp is private to root
    os.chmod(base, 0o755)
    data = base / "pg"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    r = _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"])
    assert r.returncode == 0, r.stderr
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    r = _as_postgres(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(data / "log"),
            "-w",
            "start",
        ]
    )
    assert r.returncode == 0, r.stderr + r.stdout
    try:
        r = _as_postgres(
            [
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "prefect",
            ]
        )
        assert r.returncode == 0, r.stderr
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"])
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_retrain_runs_through_a_process_work_pool_on_a_postgres_backed_server(
    tmp_path, postgres, monkeypatch
):
    home = tmp_path / "home"
    from sim.collect import collect

    collect("reach", 16, noise=0.3, seed=0, corpus_path=home / "corpus.zarr")
    port = free_port()
    # the library's own server start, pointed at PostgreSQL through Prefect's setting
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", postgres)
    api = start_server(home, port, timeout=120)
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"), "PREFECT_API_URL": api,
           "DO_NOT_TRACK": "1", "FLYWHEEL_HOME": str(home)}  # fmt: skip
    prefect = str(Path(sys.executable).parent / "prefect")
    procs = []
    try:
        r = subprocess.run([prefect, "work-pool", "create", "flywheel", "--type", "process"], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        procs.append(subprocess.Popen([prefect, "worker", "start", "--pool", "flywheel", "--limit", "1"], env=env, cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))  # fmt: skip
        code = (
            "from pipelines.pool import deploy_to_pool\n"
            "from prefect.deployments import run_deployment\n"
            f"deploy_to_pool('flywheel', {str(home)!r}, tasks=('reach',), parameters={{'retrain': {{'steps': 100, 'eval_episodes': 4}}}})\n"
            "run = run_deployment('retrain-latest/retrain-pool', timeout=600)\n"
            "print(run.state.type.value)\n"
        )
        r = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.strip().splitlines()[-1] == "COMPLETED", r.stdout[-2000:]
        record = json.loads((home / "state" / "retrain.json").read_text())
        assert Path(record["reach"]["multistep"]).is_dir()
    finally:
        stop_server(home)
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a worker mid-poll on a loaded machine
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)
