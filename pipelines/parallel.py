"""Parallel collection and evaluation on Dask (prefect-dask).

`on_dask(collect_flow, workers=4)` runs the flow's submitted tasks on a local Dask cluster; give
`address=` to use an existing cluster across machines. Use a real Prefect server (not the
ephemeral one) when workers are processes: each would otherwise start its own server.
"""

from __future__ import annotations

from typing import Any


def dask_runner(workers: int = 2, *, processes: bool = True, address: str | None = None) -> Any:
    """A DaskTaskRunner: a local cluster of `workers` single-threaded workers, or `address`."""
    from prefect_dask import DaskTaskRunner

    if address is not None:
        return DaskTaskRunner(address=address)
    kwargs = {"n_workers": workers, "threads_per_worker": 1, "processes": processes}
    return DaskTaskRunner(cluster_kwargs=kwargs)


def on_dask(flow: Any, workers: int = 2, **kwargs: Any) -> Any:
    """The same flow, with its submitted tasks run on Dask."""
    return flow.with_options(task_runner=dask_runner(workers, **kwargs))
