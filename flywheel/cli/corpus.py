"""`flywheel corpus ...`: create, inspect, check, repair and watch the episode corpus."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.output import console, emit_json, key_values, progress_bar, table
from flywheel.corpus import Corpus, CorpusError, Filter
from flywheel.home import default_corpus_path

app = typer.Typer(help="The Zarr episode corpus.", no_args_is_help=True)

CorpusOpt = Annotated[
    Path | None,
    typer.Option("--corpus", help="Corpus path (default: $FLYWHEEL_HOME/corpus.zarr)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def open_corpus(path: Path | None) -> Corpus:
    """Open the corpus or exit with a message that says what to do."""
    try:
        return Corpus(path or default_corpus_path())
    except CorpusError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


@app.command()
def init(
    path: Annotated[Path | None, typer.Argument(help="Where to create it.")] = None,
    json: JsonOpt = False,
) -> None:
    """Create an empty corpus (no-op if one is there)."""
    c = Corpus.open_or_create(path or default_corpus_path())
    out = {
        "path": str(c.path),
        "schema_version": c.schema_version,
        "episodes": c.info()["episodes"],
    }
    emit_json(out) if json else console.print(f"corpus ready at {c.path}")


@app.command()
def info(corpus: CorpusOpt = None, json: JsonOpt = False) -> None:
    """Totals, counts by source and task, schema version (from the index: instant at any size)."""
    data = open_corpus(corpus).info()
    if json:
        emit_json(data)
        return
    key_values(
        "corpus",
        {k: data[k] for k in ("path", "schema_version", "episodes", "frames", "generation")}
        | {"by_source": data["by_source"], "quarantined": data["quarantined"]},
    )
    rows = [{"task": t, **v} for t, v in sorted(data["by_task"].items())]
    if rows:
        table("by task", rows)


@app.command("list")
def list_(
    corpus: CorpusOpt = None,
    source: Annotated[str | None, typer.Option(help="sim, real or online.")] = None,
    task: Annotated[str | None, typer.Option()] = None,
    success: Annotated[bool | None, typer.Option("--success/--failure")] = None,
    policy_version: Annotated[str | None, typer.Option()] = None,
    since: Annotated[datetime | None, typer.Option(help="Created at or after (ISO time).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Created before (ISO time).")] = None,
    limit: Annotated[int, typer.Option()] = 50,
    json: JsonOpt = False,
) -> None:
    """List episodes matching filters (an index query: no episode is opened)."""
    c = open_corpus(corpus)
    flt = Filter(
        source=source,
        task=task,
        success=success,
        policy_version=policy_version,
        since=since.timestamp() if since else None,
        until=until.timestamp() if until else None,
    )
    rows = [e.to_json() for e in c.index.query(flt, limit=limit)]
    if json:
        emit_json({"episodes": rows, "generation": c.index.generation()})
    else:
        cols = ["episode_id", "source", "task", "success", "length", "return", "policy_version"]
        table(f"episodes ({len(rows)} shown)", rows, cols)


@app.command()
def verify(
    corpus: CorpusOpt = None,
    deep: Annotated[bool, typer.Option(help="Re-read every array and check its digest.")] = False,
    json: JsonOpt = False,
) -> None:
    """Find leftovers of killed writers and corrupt episodes; exit 1 when not ok."""
    from flywheel.corpus.maintenance import verify as run_verify

    c = open_corpus(corpus)
    with progress_bar(
        "verifying", c.info()["episodes"] if deep else None, enabled=deep and not json
    ) as adv:
        rep = run_verify(c, deep=deep, progress=adv).to_json()
    if json:
        emit_json(rep)
    else:
        key_values(
            "verify", {k: v for k, v in rep.items() if k not in ("stale_staging", "unindexed")}
        )
    if not rep["ok"]:
        raise typer.Exit(1)


@app.command()
def repair(
    corpus: CorpusOpt = None,
    deep: Annotated[bool, typer.Option(help="Also quarantine corrupt episodes.")] = False,
    json: JsonOpt = False,
) -> None:
    """Remove stale staging folders, adopt complete unindexed episodes, drop duplicates."""
    from flywheel.corpus.maintenance import repair as run_repair

    c = open_corpus(corpus)
    with progress_bar(
        "repairing", c.info()["episodes"] if deep else None, enabled=deep and not json
    ) as adv:
        done = run_repair(c, deep=deep, progress=adv)
    emit_json(done) if json else key_values("repair", done)


@app.command("rebuild-index")
def rebuild_index(corpus: CorpusOpt = None, json: JsonOpt = False) -> None:
    """Rebuild the episode index from the episode groups (atomic swap; new epoch)."""
    from flywheel.corpus.maintenance import rebuild_index as run_rebuild

    c = open_corpus(corpus)
    with progress_bar("reading episodes", None, enabled=not json) as adv:
        out = run_rebuild(c, progress=adv)
    emit_json(out) if json else key_values("rebuild-index", out)


@app.command("export-video")
def export_video(
    episode_id: Annotated[str, typer.Argument(help="Episode id (see `flywheel corpus list`).")],
    camera: Annotated[str, typer.Option(help="Camera stream name, e.g. front.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .mp4 path.")],
    corpus: CorpusOpt = None,
    json: JsonOpt = False,
) -> None:
    """Write one camera of an episode as an mp4 (OpenCV), to watch what the robot saw."""
    from flywheel.corpus.video import write_mp4

    c = open_corpus(corpus)
    meta = c.metadata(episode_id)
    key = f"images/{camera}"
    if key not in meta["features"]:
        cams = [k[7:] for k in meta["features"] if k.startswith("images/")]
        console.print(
            f"[red]error:[/red] episode {episode_id} has no camera {camera!r}; has {cams}"
        )
        raise typer.Exit(2)
    frames = c.read_arrays(episode_id, [key])[key]
    with progress_bar("encoding", len(frames), enabled=not json) as adv:
        n = write_mp4(output, frames, fps=float(meta["control_hz"]), progress=adv)
    out = {"path": str(output), "frames": n, "fps": meta["control_hz"]}
    emit_json(out) if json else console.print(f"wrote {n} frames to {output}")


@app.command(hidden=True)
def synth(
    episodes: Annotated[int, typer.Option()] = 5,
    cameras: Annotated[str, typer.Option(help="Comma-separated camera names.")] = "front",
    seed: Annotated[int, typer.Option()] = 0,
    corpus: CorpusOpt = None,
    json: JsonOpt = False,
) -> None:
    """Write synthetic episodes (for a first look before any sim or robot data exists)."""
    from flywheel.corpus.synthetic import synthetic_episode

    c = Corpus.open_or_create(corpus or default_corpus_path())
    cams = tuple(x for x in cameras.split(",") if x)
    ids = []
    with progress_bar("writing episodes", episodes, enabled=not json) as adv:
        for i in range(episodes):
            ids.append(c.append(synthetic_episode(seed + i, cameras=cams)).episode_id)
            adv(1)
    emit_json({"episodes": ids}) if json else console.print(
        f"wrote {len(ids)} episodes to {c.path}"
    )
