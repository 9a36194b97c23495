"""The `flywheel` command: one typer app; each capability adds its sub-commands."""

from __future__ import annotations

import typer

from flywheel.cli import corpus, learn

app = typer.Typer(
    name="flywheel",
    help="Robot-learning data flywheel: corpus, collection, training, deployment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(corpus.app, name="corpus")
learn.register(app)

try:  # sim collection (needs MuJoCo); the library itself never imports sim
    from flywheel.cli import collect as _collect
except ImportError:  # pragma: no cover - collect.py arrives with the sim package
    _collect = None
if _collect is not None:
    _collect.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
