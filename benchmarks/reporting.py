"""How every benchmark reports: one JSON line per figure on stdout, a table on stderr.

`ratio` is ours / anchor; whether lower or higher is better depends on the metric (seconds vs
throughput), so each row says its floor or goal next to it.
"""

from __future__ import annotations

import contextlib
import json
import os

ROWS_BY_BENCH: dict[str, list[dict]] = {}


def emit(bench: str, metric: str, ours: float, anchor: str | None, anchor_value: float | None, *, digits: int = 6, **extra) -> dict:  # fmt: skip
    """Print and remember one row."""
    row = {"bench": bench, "metric": metric, "ours": round(ours, digits), "anchor": anchor}
    if anchor_value is not None:
        row["anchor_value"] = round(anchor_value, digits)
        row["ratio"] = round(ours / anchor_value, 4) if anchor_value else None
    row.update(extra)
    ROWS_BY_BENCH.setdefault(bench, []).append(row)
    print(json.dumps(row), flush=True)
    return row


def one_core() -> None:
    """Pin this process to one CPU (floors are stated per core) and keep OpenCV single-threaded."""
    with contextlib.suppress(AttributeError, OSError):  # not every OS can pin
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import cv2

    cv2.setNumThreads(1)


def print_table(bench: str, columns: tuple[str, ...] = ("metric", "ours", "anchor", "anchor_value", "ratio")) -> None:  # fmt: skip
    """The rows of `bench` as a rich table on stderr."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{bench} benchmark (ratio = ours / anchor)")
    for col in columns:
        t.add_column(col)
    for r in ROWS_BY_BENCH.get(bench, []):
        t.add_row(*(str(r.get(k, "")) for k in columns))
    Console(stderr=True).print(t)
