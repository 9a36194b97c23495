"""How commands speak: JSON on stdout for machines, rich tables and progress bars for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)
"""Human output goes to stderr so `--json` stdout stays machine-readable."""


def emit_json(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


def table(title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """A rich table of dict rows on stderr."""
    cols = columns or (list(rows[0]) if rows else [])
    t = Table(title=title)
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*(str(r.get(c, "")) for c in cols))
    console.print(t)


def key_values(title: str, data: dict[str, Any]) -> None:
    """A two-column table of a flat dict."""
    table(title, [{"key": k, "value": v} for k, v in data.items()], ["key", "value"])


@contextmanager
def progress_bar(
    description: str, total: int | None, *, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar; yields `advance(n)`. Disabled (a no-op) for `--json` runs."""
    if not enabled:
        yield lambda n=1: None
        return
    with _progress() as p:
        task = p.add_task(description, total=total)
        yield lambda n=1: p.advance(task, n)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


@contextmanager
def stage_bars(*, enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """One bar per stage name; yields `update(stage, done, total)` (a no-op when disabled)."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    tasks: dict[str, Any] = {}
    with _progress() as p:

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = p.add_task(stage, total=total)
            p.update(tasks[stage], completed=done)

        yield update
