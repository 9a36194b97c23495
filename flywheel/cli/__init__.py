"""The `flywheel` command: one typer app; each capability adds its sub-commands."""

from __future__ import annotations

import typer

from flywheel.cli import collect, corpus, deploy, ingest, learn, run

app = typer.Typer(
    name="flywheel",
    help="Robot-learning data flywheel: corpus, collection, training, deployment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(corpus.app, name="corpus")
learn.register(app)
ingest.register(app)
deploy.register(app)
collect.register(app)  # imports sim lazily, inside the command
run.register(app)  # imports pipelines (and Prefect) lazily


def main() -> None:
    """Console-script entry point."""
    app()
