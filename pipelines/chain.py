"""Flows for the served flywheel: each reads the previous step's record and emits an event.

Scheduled and triggered runs cannot hand each other Python objects, so each step writes a small
JSON record under `$FLYWHEEL_HOME/state/` and emits an event; the next deployment's trigger
listens for that event and reads the record. New-episode counts accumulate in
`state/pending.json`; crossing the threshold emits `flywheel.retrain.due`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from flywheel.corpus.layout import flocked
from pipelines.flows import RoundConfig, collect_flow, deploy_flow, refine_flow, retrain_flow

RESOURCE = {"prefect.resource.id": "flywheel.corpus"}


def _state(home: str, name: str) -> Path:
    d = Path(home) / "state"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{name}.json"


def _write(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def note_new_episodes(home: str, counts: dict[str, int], threshold: int) -> bool:
    """Add to the pending count; emit `flywheel.retrain.due` once it reaches `threshold`."""
    path = _state(home, "pending")
    with flocked(path.with_suffix(".lock"), exclusive=True):
        pending = json.loads(path.read_text()) if path.exists() else {}
        for t, n in counts.items():
            pending[t] = pending.get(t, 0) + n
        due = sum(pending.values()) >= threshold
        _write(path, {} if due else pending)
    emit_event(event="flywheel.episodes.added", resource=RESOURCE, payload={"counts": counts})
    if due:
        emit_event(event="flywheel.retrain.due", resource=RESOURCE, payload={"pending": pending})
    return due


@flow(name="collect-and-count")
def collect_and_count(home: str, tasks: list[str], episodes: int = 20, threshold: int = 200, noise: float = 0.6, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Collect expert episodes, then count them towards the retrain threshold."""
    out = collect_flow(tasks, episodes, str(Path(home) / "corpus.zarr"), "expert", noise, seed)
    note_new_episodes(
        home, {t: v["episodes"] - v.get("duplicates", 0) for t, v in out.items()}, threshold
    )
    return out


@task(cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[2, 10], timeout_seconds=3600)  # fmt: skip
def ingest_task(sources: list[str], corpus: str) -> dict[str, Any]:
    """Ingest files into the corpus (idempotent: already-ingested content is a duplicate)."""
    from flywheel.corpus import Corpus
    from flywheel.ingest import ingest

    c = Corpus.open_or_create(corpus)
    report = ingest(sources, c)
    tasks = {e.episode_id: e.task for e in c.entries() if e.episode_id in set(report.accepted)}
    counts: dict[str, int] = {}
    for t in tasks.values():
        counts[t] = counts.get(t, 0) + 1
    return {**report.to_json(), "counts": counts}


@flow(name="ingest")
def ingest_flow(home: str, drop: str | None = None, sources: list[str] | None = None, threshold: int = 200) -> dict[str, Any]:  # fmt: skip
    """New episode files (or everything in a watched drop folder) -> corpus; count them.

    Emits `flywheel.episodes.added` with the new episodes per task (and `flywheel.retrain.due`
    when the pending count crosses the threshold).
    """
    paths = list(sources or [])
    if drop is not None and Path(drop).is_dir():
        paths += [str(p) for p in sorted(Path(drop).iterdir()) if not p.name.startswith(".")]
    if not paths:
        return {"accepted": [], "counts": {}}
    out = ingest_task(paths, str(Path(home) / "corpus.zarr"))
    if out["counts"]:
        note_new_episodes(home, out["counts"], threshold)
    return out


@flow(name="retrain-latest")
def retrain_latest(home: str, tasks: list[str], steps: int = RoundConfig.steps, eval_episodes: int = RoundConfig.eval_episodes) -> dict[str, Any]:  # fmt: skip
    """Retrain on the current snapshot; record it; emit `flywheel.retrain.completed`."""
    c = RoundConfig(tasks=tuple(tasks), steps=steps, eval_episodes=eval_episodes)
    out = retrain_flow(
        tasks, str(Path(home) / "corpus.zarr"), home, c.steps, c.seed, c.eval_episodes, c.eval_seed
    )
    _write(_state(home, "retrain"), out)
    emit_event(event="flywheel.retrain.completed", resource=RESOURCE, payload={"tasks": tasks})
    return out


@flow(name="refine-latest")
def refine_latest(home: str, online_steps: int = RoundConfig.online_steps, eval_episodes: int = RoundConfig.eval_episodes) -> dict[str, Any]:  # fmt: skip
    """Targeted refinement of the latest retrain; emit `flywheel.refine.completed`."""
    retrained = json.loads(_state(home, "retrain").read_text())
    cfg = RoundConfig(
        tasks=tuple(retrained), online_steps=online_steps, eval_episodes=eval_episodes
    )
    from dataclasses import asdict

    out = refine_flow(retrained, asdict(cfg), str(Path(home) / "corpus.zarr"), home)
    _write(_state(home, "refine"), {"retrained": retrained, "refined": out})
    emit_event(
        event="flywheel.refine.completed", resource=RESOURCE, payload={"tasks": list(retrained)}
    )
    return out


@flow(name="deploy-latest")
def deploy_latest(home: str) -> dict[str, Any]:
    """Deploy the best policy of the latest refine per task; record it."""
    rec = json.loads(_state(home, "refine").read_text())
    candidates = {
        t: [
            {"stage": "multistep", "bundle": r["multistep"], "success": r["success_multistep"]},
            {"stage": "online", "bundle": rec["refined"]["targets"][t]["bundle"], "success": rec["refined"]["targets"][t]["after"]},
        ]
        for t, r in rec["retrained"].items()
    }  # fmt: skip
    chosen = deploy_flow(candidates, home)
    _write(_state(home, "deployed"), chosen)
    return chosen
