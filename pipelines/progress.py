"""Stage notifications from flows to whoever runs them in-process (the CLI's progress bar).

Flows stay free of UI code: they call `stage(...)`; `flywheel run` installs a listener that
advances a rich progress bar. Without a listener, `stage` does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

_listener: Callable[[str], None] | None = None


def set_listener(fn: Callable[[str], None] | None) -> None:
    """Install (or remove, with None) the stage listener of this process."""
    global _listener
    _listener = fn


def stage(name: str) -> None:
    """Report that a flow stage has started."""
    if _listener is not None:
        _listener(name)
