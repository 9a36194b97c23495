"""Flows: task logic through `.fn()`, flows under a test harness, retries, a tiny full round."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sim")

from flywheel.corpus import Corpus, Filter
from pipelines import flows
from pipelines.report import plot_learning_curves, plot_rounds, round_rows

ROOT = Path(__file__).resolve().parents[2]


def test_task_logic_collect_train_eval_through_fn(tmp_path):
    corpus = str(tmp_path / "c.zarr")
    out = flows.collect_task.fn("reach", 12, "expert", 0.3, 0, corpus)
    assert out["episodes"] == 12 and "episode_ids" not in out  # ids stay out of Prefect results
    res = flows.train_task.fn("reach", "bc", 100, 0, corpus, str(tmp_path))
    assert Path(res["bundle"]).is_dir() and res["snapshot"]["episodes"] == 12
    ev = flows.eval_task.fn(res["bundle"], "reach", 4, 0)
    assert ev["episodes"] == 4 and 0.0 <= ev["success_rate"] <= 1.0
    again = flows.collect_task.fn(
        "reach", 6, res["bundle"].split("/")[-1], 0.0, 100, corpus, res["bundle"]
    )
    assert again["episodes"] == 6
    by_policy = Corpus(corpus).entries(Filter(policy_version=Path(res["bundle"]).name))
    assert len(by_policy) == 6  # deployed-policy episodes are recorded with their version
    cli = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "collect", "--task", "reach", "--episodes", "3",
         "--policy", res["bundle"], "--seed", "500", "--corpus", corpus, "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert json.loads(cli.stdout)["policy"] == Path(res["bundle"]).name
    assert len(Corpus(corpus).entries(Filter(policy_version=Path(res["bundle"]).name))) == 9


def test_collect_flow_retries_a_transient_io_failure(tmp_path, prefect_harness, monkeypatch):
    import sim.collect

    real = sim.collect.collect
    calls = []

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk busy (injected)")
        return real(*a, **kw)

    monkeypatch.setattr(sim.collect, "collect", flaky)
    monkeypatch.setitem(flows.IO, "retry_delay_seconds", [0])
    task = flows.collect_task.with_options(retry_delay_seconds=0)
    monkeypatch.setattr(flows, "collect_task", task)
    out = flows.collect_flow(["reach"], 5, str(tmp_path / "c.zarr"), "expert", 0.3, 0)
    assert len(calls) == 2 and out["reach"]["episodes"] == 5


def test_report_rows_and_plot(tmp_path):
    r = {"round": 1, "collected": {"lift": {"episodes": 50, "success_rate": 0.8}},
         "tasks": {"lift": {"bc": 0.4, "multistep": 0.5, "online": 0.7, "online_env_steps": 100,
                            "generations": 8, "accepted_generations": 2, "deployed": "online"}}}  # fmt: skip
    rows = round_rows(r)
    assert rows[0]["online"] == 0.7 and rows[0]["generations_accepted"] == "2/8"
    png = plot_rounds([r, {**r, "round": 2}], tmp_path / "p.png")
    assert png.stat().st_size > 5000
    gens = [
        {"generation": 0, "ope_candidate": None, "ope_accepted": 1.0, "sim_candidate": None, "sim_accepted": 0.5},
        {"generation": 1, "ope_candidate": 1.2, "ope_accepted": 1.0, "sim_candidate": 0.7, "sim_accepted": 0.5},
    ]  # fmt: skip
    r["tasks"]["lift"] |= {
        "generation_log": gens,
        "online_log": [{"env_steps": 100, "success": 0.8}],
    }
    assert plot_learning_curves([r], tmp_path / "lc.png").stat().st_size > 5000


@pytest.mark.slow
def test_flywheel_run_one_tiny_round(tmp_path):
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_HOME", None)
    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "run", "--rounds", "1", "--tasks", "reach", "--demos", "16",
         "--steps", "200", "--online-steps", "1024", "--eval-episodes", "8", "--json"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)
    (r,) = res["rounds"]
    assert set(r["tasks"]["reach"]) == {"bc", "multistep", "online", "deployed"}
    assert Path(r["deployed"]["reach"]).is_dir() and Path(res["report"]).exists()
    info = Corpus(tmp_path / "home" / "corpus.zarr").info()
    assert info["by_source"]["sim"] == 16 and info["by_source"].get("online", 0) > 0
    from flywheel.registry import Registry

    reg = Registry(tmp_path / "home" / "registry" / "reach")
    assert [v.version for v in reg.versions()] == [1]
    assert reg.aliases().get("production") == 1  # first candidate, no incumbent: gates passed
    assert r["deployed"]["reach"] == str(reg.bundle_path(1))
    assert any(e["op"].startswith("promote") for e in reg.audit_entries())


def test_ingest_flow_takes_the_drop_folder_and_counts_new_episodes(
    tmp_path, prefect_harness, monkeypatch
):
    from pipelines import chain
    from tests.ingest.fixtures import dir_episode

    home = tmp_path / "home"
    drop = home / "drop"
    for i in range(3):
        dir_episode(
            drop / f"ep{i}", n=20 + i, meta={"task": "wipe", "robot": "arm-1", "success": True}
        )
    events = []
    monkeypatch.setattr(chain, "emit_event", lambda **kw: events.append(kw["event"]))
    out = chain.ingest_flow(str(home), drop=str(drop), threshold=3)
    assert len(out["accepted"]) == 3 and out["counts"] == {"wipe": 3}
    assert events == ["flywheel.episodes.added", "flywheel.retrain.due"]
    again = chain.ingest_flow(str(home), drop=str(drop), threshold=3)  # idempotent
    assert again["accepted"] == [] and again["duplicates"] == 3
    assert Corpus(home / "corpus.zarr").info()["by_task"]["wipe"]["episodes"] == 3


def test_collect_flow_runs_tasks_in_parallel_on_dask(tmp_path, prefect_harness):
    pytest.importorskip("prefect_dask")
    from pipelines.parallel import on_dask

    corpus = str(tmp_path / "c.zarr")
    out = on_dask(flows.collect_flow, workers=2, processes=False)(
        ["reach", "push"], 3, corpus, "expert", 0.3, 0
    )
    assert {t: v["episodes"] for t, v in out.items()} == {"reach": 3, "push": 3}
    assert Corpus(corpus).info()["by_task"].keys() == {"reach", "push"}
