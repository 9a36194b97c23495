"""`flywheel collect`: roll out a policy in simulation and commit the episodes to the corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.output import console, emit_json, key_values, progress_bar
from flywheel.home import default_corpus_path

DEFAULT_NOISE = 0.6  # mirrors sim.experts.DEFAULT_NOISE without importing MuJoCo at CLI start


def register(app: typer.Typer) -> None:
    """Add the `collect` command to the main app."""
    app.command(name="collect")(collect_command)


def collect_command(
    task: Annotated[str, typer.Option("--task", help="reach, push, lift, pick_place, drawer.")],
    episodes: Annotated[int, typer.Option("--episodes", min=1, help="Episodes to collect.")] = 10,
    policy: Annotated[
        str, typer.Option("--policy", help="`expert` or a registered policy loader name.")
    ] = "expert",
    noise: Annotated[
        float,
        typer.Option("--noise", min=0.0, max=1.0, help="Expert noise level: 0 clean, 1 sloppy."),
    ] = DEFAULT_NOISE,
    seed: Annotated[int, typer.Option("--seed", help="Episode i uses seed + i.")] = 0,
    cameras: Annotated[
        str, typer.Option("--cameras", help="Comma-separated cameras to record: front,wrist.")
    ] = "",
    image_size: Annotated[
        int, typer.Option("--image-size", help="Square image size in pixels (84 or 128).")
    ] = 84,
    variation: Annotated[
        str, typer.Option("--variation", help="Domain randomisation preset: none, mild, wide.")
    ] = "none",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 1,
    corpus: Annotated[
        Path | None,
        typer.Option("--corpus", help="Corpus path (default: $FLYWHEEL_HOME/corpus.zarr)."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Collect simulated episodes with a scripted expert (or a registered policy)."""
    import sim  # noqa: F401  (MuJoCo is imported only when collecting)
    from sim.collect import collect

    cams = tuple(c.strip() for c in cameras.split(",") if c.strip())
    if policy != "expert":
        policy, workers = _trained_policy(policy, task, workers)
    path = corpus or default_corpus_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with progress_bar(f"collecting {task}", episodes, enabled=not json) as advance:
        try:
            result = collect(
                task,
                episodes,
                policy=policy,
                noise=noise,
                seed=seed,
                cameras=cams,
                workers=workers,
                corpus_path=path,
                image_size=image_size,
                variation=variation,
                progress=lambda done, success: advance(1),
            )
        except (KeyError, ValueError) as e:
            console.print(f"[red]error:[/red] {e.args[0] if e.args else e}")
            raise typer.Exit(2) from None
    if json:
        emit_json(result)
        return
    summary = {k: v for k, v in result.items() if k != "episode_ids"}
    summary["success_rate"] = f"{result['success_rate']:.1%}"
    summary["seconds"] = f"{result['seconds']:.1f}"
    summary["env_steps_per_s"] = f"{result['env_steps_per_s']:.0f}"
    key_values("collect", summary)


def _trained_policy(ref: str, task: str, workers: int) -> tuple[str, int]:
    """A bundle folder, a name under $FLYWHEEL_HOME/bundles, or a version/alias of the task's
    registry (`3`, `v3`, `production`), registered as a sim policy in this process.

    Registration is per process, so a trained policy collects with one worker.
    """
    from pathlib import Path

    from flywheel.home import flywheel_home
    from pipelines.sim_policies import register_bundle_policy, version_name

    home = flywheel_home()
    candidates = [Path(ref), home / "bundles" / ref]
    bundle = next((p for p in candidates if (p / "manifest.json").exists()), None)
    if bundle is None:
        from flywheel.registry import Registry, RegistryError

        for root in (home / "registry" / task, home / "registry"):
            try:
                reg = Registry(root)
                bundle = reg.bundle_path(reg.resolve(ref))
                break
            except (RegistryError, OSError, ValueError):
                continue
    if bundle is None:
        console.print(
            f"[red]error:[/red] no policy {ref!r}: not `expert`, a bundle or a registry version"
        )
        raise typer.Exit(2)
    if workers > 1:
        console.print("[yellow]note:[/yellow] a trained policy collects with one worker")
    return register_bundle_policy(bundle, version_name(bundle)), 1
