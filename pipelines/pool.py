"""Beyond one machine: the flywheel's deployments on a Prefect work pool.

With a Prefect server on PostgreSQL (set `PREFECT_API_DATABASE_CONNECTION_URL` for
`prefect server start`) and a `process` work pool, workers on any machine that has this
repository and `FLYWHEEL_HOME` (a shared filesystem) pick up retrain/refine/collect runs:

    prefect work-pool create flywheel --type process
    prefect worker start --pool flywheel          # on each worker machine
    python -c "from pipelines.pool import deploy_to_pool; deploy_to_pool('flywheel', HOME)"

Deployments are created from source (this checkout), so workers run the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

ENTRYPOINTS = {
    "retrain": "pipelines/chain.py:retrain_latest",
    "refine": "pipelines/chain.py:refine_latest",
    "deploy": "pipelines/chain.py:deploy_latest",
    "collect": "pipelines/chain.py:collect_and_count",
}


def deploy_to_pool(pool: str, home: str | Path, *, tasks: tuple[str, ...] = ("lift",), parameters: dict[str, dict[str, Any]] | None = None) -> list[str]:  # fmt: skip
    """Register the flywheel's deployments on work pool `pool`; returns their ids."""
    from prefect import flow

    ids = []
    for name, entry in ENTRYPOINTS.items():
        params: dict[str, Any] = {"home": str(home)}
        if name in ("retrain", "collect"):
            params["tasks"] = list(tasks)
        params |= (parameters or {}).get(name, {})
        remote = flow.from_source(source=str(ROOT), entrypoint=entry)
        dep_id = remote.deploy(
            name=f"{name}-pool",
            work_pool_name=pool,
            parameters=params,
            concurrency_limit=1 if name in ("retrain", "refine") else None,
            build=False,
            push=False,
            print_next_steps=False,
        )
        ids.append(str(dep_id))
    return ids
