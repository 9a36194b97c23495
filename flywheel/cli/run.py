"""`flywheel run`: whole flywheel rounds on the embedded default (local files, ephemeral Prefect)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from flywheel.cli.output import console, emit_json, progress_bar, table
from flywheel.home import flywheel_home


def register(app: typer.Typer) -> None:
    """Add `run` to the `flywheel` app."""

    @app.command()
    def run(
        rounds: Annotated[int, typer.Option(help="Turns of the loop.")] = 2,
        tasks: Annotated[str, typer.Option(help="Comma-separated sim tasks.")] = "lift",
        demos: Annotated[int, typer.Option(help="Expert demos per task in round 1.")] = 50,
        policy_episodes: Annotated[
            int, typer.Option(help="Deployed-policy episodes per task per later round.")
        ] = 30,
        steps: Annotated[int, typer.Option(help="Gradient steps per offline stage.")] = 2000,
        online_steps: Annotated[
            int, typer.Option(help="Online env-step budget per round.")
        ] = 40_000,
        refine_algo: Annotated[
            str, typer.Option(help="Online refinement: sac (improves) or ppo (fast, stays close).")
        ] = "sac",
        eval_episodes: Annotated[int, typer.Option(help="Evaluation episodes per policy.")] = 50,
        seed: Annotated[int, typer.Option()] = 0,
        json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    ) -> None:
        """Run full rounds: collect -> retrain (BC, multi-step) -> refine online -> deploy."""
        import sim
        from pipelines.settings import configure

        unknown = sorted(set(tasks.split(",")) - set(sim.GYM_IDS) - {""})
        if unknown:  # before Prefect starts: a typo should not cost a server start-up
            raise typer.BadParameter(f"unknown task(s) {unknown}; sim tasks: {sorted(sim.GYM_IDS)}")
        from flywheel.online import check_refine_algo

        try:  # before Prefect starts, like the tasks
            check_refine_algo(refine_algo)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--refine-algo") from None
        if online_steps < 0:
            raise typer.BadParameter(f"{online_steps} (0 skips refinement)", param_hint="--online-steps")  # fmt: skip
        _check_eval_episodes(eval_episodes)
        home = flywheel_home().resolve()
        configure(home)
        from pipelines.flows import RoundConfig, flywheel_rounds

        cfg = RoundConfig(
            tasks=tuple(t for t in tasks.split(",") if t),
            demos=demos,
            policy_episodes=policy_episodes,
            steps=steps,
            online_steps=online_steps,
            refine_algo=refine_algo,
            eval_episodes=eval_episodes,
            seed=seed,
        )
        from pipelines.progress import set_listener

        if not json:
            console.print(f"flywheel: {rounds} round(s) of {list(cfg.tasks)} under {home}")
        with progress_bar("flywheel", rounds * 4, enabled=not json) as advance:
            names: list[str] = []

            def on_stage(name: str) -> None:
                if names:
                    advance(1)
                names.append(name)
                if not json:
                    console.print(f"[dim]{name}[/dim]")

            set_listener(on_stage)
            try:
                results = flywheel_rounds(rounds, asdict(cfg), str(home / "corpus.zarr"), str(home))
            finally:
                set_listener(None)
        out = {
            "rounds": [
                {
                    "round": r["round"],
                    "tasks": {
                        t: {k: v[k] for k in ("bc", "multistep", "online", "deployed")}
                        for t, v in r["tasks"].items()
                    },
                    "deployed": r["deployed"],
                }
                for r in results
            ],
            "report": str(home / "reports" / "report.md"),
        }
        if json:
            emit_json(out)
            return
        from pipelines.report import round_rows

        cols = ["round", "task", "bc", "multistep", "online", "deployed", "production"]
        table(
            "flywheel rounds: success per stage",
            [row for r in results for row in round_rows(r)],
            cols,
        )
        console.print(f"report: {out['report']}")

    @app.command()
    def serve(
        status: Annotated[
            bool, typer.Option("--status", help="Print the server and deployments.")
        ] = False,
        stop: Annotated[
            bool, typer.Option("--stop", help="Stop the server and the deployments.")
        ] = False,
        tasks: Annotated[str, typer.Option(help="Comma-separated sim tasks.")] = "lift",
        port: Annotated[int, typer.Option(help="Loopback port of the Prefect server.")] = 4207,
        retrain_cron: Annotated[
            str, typer.Option(help="Cron of the scheduled retrain.")
        ] = "0 2 * * *",
        retrain_threshold: Annotated[
            int, typer.Option(help="New episodes that trigger a retrain.")
        ] = 200,
        steps: Annotated[int, typer.Option(help="Gradient steps per offline stage.")] = 2000,
        online_steps: Annotated[
            int, typer.Option(help="Online env-step budget per refine.")
        ] = 40_000,
        eval_episodes: Annotated[int, typer.Option(help="Evaluation episodes per policy.")] = 50,
        json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    ) -> None:
        """Start (or reuse) a local Prefect server and serve the flywheel's deployments."""
        _check_eval_episodes(eval_episodes)  # before the server starts, not in a scheduled run
        from pipelines.settings import configure

        home = flywheel_home().resolve()
        home.mkdir(parents=True, exist_ok=True)
        configure(home)
        from pipelines import serve as srv

        if stop:
            out = {"stopped": srv.stop_server(home)}
            emit_json(out) if json else console.print(
                "stopped" if out["stopped"] else "nothing to stop"
            )
            return
        if status:
            info = srv.server_status(home)
            if info is not None:
                import os

                os.environ["PREFECT_API_URL"] = info["api_url"]
            out = srv.status(home)
            emit_json(out) if json else table("deployments", out["deployments"] or [{"name": "-"}])
            return
        api_url = srv.start_server(home, port)
        import os

        os.environ["PREFECT_API_URL"] = api_url
        cfg = srv.ServeConfig(
            tasks=tuple(t for t in tasks.split(",") if t),
            retrain_cron=retrain_cron,
            retrain_threshold=retrain_threshold,
            port=port,
            steps=steps,
            online_steps=online_steps,
            eval_episodes=eval_episodes,
        )
        console.print(
            f"Prefect server at {api_url} (UI: {api_url[:-4]}); serving deployments, Ctrl-C to stop"
        )
        srv.serve(home, cfg)


def _check_eval_episodes(n: int) -> None:
    """Refuse an evaluation of no episodes (its success rate would be NaN) before any work."""
    if n < 1:
        raise typer.BadParameter(f"{n}: every policy needs at least 1 evaluation episode", param_hint="--eval-episodes")  # fmt: skip
