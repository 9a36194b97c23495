"""`flywheel ingest SRC...` and `flywheel ingest quarantine`: real-robot episodes into the corpus.

`ingest` is a group whose default command is `run`, so `flywheel ingest data/ds --json` and
`flywheel ingest quarantine --json` both work (a source folder literally named `quarantine` is
`flywheel ingest run quarantine` or `./quarantine`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from rich.markup import escape
from typer.core import TyperGroup

from flywheel.cli.output import console, emit_json, key_values, progress_bar, table
from flywheel.home import default_corpus_path

EXIT_QUARANTINED = 3
"""Exit code when at least one source episode was quarantined (0: all accepted)."""
EXIT_USAGE = 2


class _DefaultToRun(TyperGroup):
    """Anything that is not a sub-command name is the source list of `run`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultToRun,
    help="Ingest real-robot episodes (LeRobot, ROS 2 bags, HDF5, plain folders). "
    "`flywheel ingest SRC...` runs `ingest run SRC...`.",
    no_args_is_help=True,
)

CorpusOpt = Annotated[
    Path | None,
    typer.Option("--corpus", help="Corpus path (default: $FLYWHEEL_HOME/corpus.zarr)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def register(root: typer.Typer) -> None:
    """Add `ingest` (and `ingest quarantine`) to the main app."""
    root.add_typer(app, name="ingest")


@app.command("run")
def run(
    sources: Annotated[
        list[Path],
        typer.Argument(help="Dataset folders, bag files/folders, .h5 files, episode folders."),
    ],
    format: Annotated[
        str, typer.Option("--format", help="auto, lerobot, mcap, hdf5 or dir.")
    ] = "auto",
    mapping: Annotated[
        Path | None, typer.Option("--mapping", help="TOML/YAML topic mapping (ROS 2 bags).")
    ] = None,
    corpus: CorpusOpt = None,
    task: Annotated[str | None, typer.Option("--task", help="Corpus task name.")] = None,
    robot: Annotated[str | None, typer.Option("--robot", help="Robot id override.")] = None,
    operator: Annotated[
        str | None, typer.Option("--operator", help="Operator, when the source has none.")
    ] = None,
    control_hz: Annotated[
        float | None, typer.Option("--control-hz", help="Control rate where the source has none.")
    ] = None,
    image_size: Annotated[
        str | None,
        typer.Option("--image-size", help="HEIGHTxWIDTH for new cameras (default: source size)."),
    ] = None,
    latency: Annotated[
        list[str] | None,
        typer.Option("--latency", help="KEY=SECONDS latency offset, e.g. images/front=0.03."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Ingest every episode of SRC...; exit 3 when some were quarantined."""
    from flywheel.corpus import Corpus
    from flywheel.ingest import (
        AlignmentConfig,
        IngestConfig,
        MappingError,
        ingest,
        load_mapping,
        parse_size,
    )

    try:
        if mapping is not None:
            load_mapping(mapping)  # a bad mapping stops the run before anything is created
        offsets = {}
        for item in latency or []:
            key, _, value = item.partition("=")
            offsets[key.strip()] = float(value)
        config = IngestConfig(
            format=format,
            task=task,
            robot=robot,
            operator=operator,
            control_hz=control_hz,
            image_size=parse_size(image_size) if image_size else None,
            mapping=mapping,
            alignment=AlignmentConfig(latency_s=offsets),
        )
    except ValueError as e:  # MappingError is a ValueError too
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(EXIT_USAGE) from None
    c = Corpus.open_or_create(corpus or default_corpus_path())
    counts = {"accepted": 0, "duplicate": 0, "quarantined": 0}
    with progress_bar("ingesting episodes", None, enabled=not json) as advance:

        def progress(source: str, outcome: str) -> None:
            counts[outcome] += 1
            advance(1)

        try:
            report = ingest(sources, c, config, progress=progress)
        except MappingError as e:
            console.print(f"[red]error:[/red] {escape(str(e))}")
            raise typer.Exit(EXIT_USAGE) from None
    out = report.to_json()
    if json:
        emit_json(out)
    else:
        key_values(
            "ingest",
            {
                "corpus": str(c.path),
                "accepted": len(report.accepted),
                "duplicates": len(report.duplicates),
                "quarantined": len(report.quarantined),
                "flagged": len(report.flagged),
                "seconds": f"{report.seconds:.1f}",
            },
        )
        if report.quarantined:
            table("quarantined", _plain(report.quarantined), ["source", "field", "reason"])
        if report.flagged:
            rows = [{**f, "flags": "; ".join(f["flags"])} for f in report.flagged]
            cols = ["source", "episode_id", "flags"]
            table("flagged (accepted, > 2 % stale ticks)", _plain(rows), cols)
    if report.quarantined:
        raise typer.Exit(EXIT_QUARANTINED)


@app.command("quarantine")
def quarantine(corpus: CorpusOpt = None, json: JsonOpt = False) -> None:
    """List refused inputs with their file, field and reason."""
    from flywheel.corpus import Corpus, CorpusError

    try:
        c = Corpus(corpus or default_corpus_path())
    except CorpusError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(EXIT_USAGE) from None
    records = [r.to_json() for r in c.quarantine.list()]
    if json:
        emit_json({"quarantined": records})
    else:
        cols = ["id", "source", "key", "reason", "copy"]
        table(f"quarantine ({len(records)})", _plain(records), cols)


def _plain(rows: list[dict]) -> list[dict]:
    """Reasons quote lists and ranges (`[0.5, 1.0)`): show them as text, not rich markup."""
    return [{k: escape(str(v)) for k, v in r.items()} for r in rows]
