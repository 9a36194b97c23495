"""`flywheel registry | export | controller`: from a trained bundle to a robot, with gates.

    flywheel registry list|register|promote|rollback|audit|verify
    flywheel export VERSION --format onnx|torchscript
    flywheel controller serve [--alias production] [--host H] [--port P]
    flywheel controller run --task TASK --server URL

This module ties the simulator in: promotion gates evaluate on sim tasks, `export` records
observations by rolling the policy out in the sim, and `controller run` is a sim robot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from flywheel.cli.output import console, emit_json, key_values, table

registry_app = typer.Typer(help="Policy versions, aliases, promotion gates.", no_args_is_help=True)
controller_app = typer.Typer(
    help="Serve policies to robots; run a sim robot.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
RegistryOpt = Annotated[
    Path | None,
    typer.Option("--registry", help="Registry folder (default: $FLYWHEEL_HOME/registry)."),
]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why: goes into the audit log.")]
TOKEN_ENV = "FLYWHEEL_CONTROLLER_TOKEN"
SIM_STOP = "0,0,0,hold"
"""Safe stop of the sim arm: no TCP motion, gripper held (an object in hand is not dropped)."""


def _registry(path: Path | None) -> Any:
    from flywheel.registry import Registry

    return Registry(path)


def _fail(e: Exception, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {e}")
    return typer.Exit(code)


def _make_env(task: str, variation: str) -> Any:
    """Sim task envs for the gates (the library only sees the Gymnasium API)."""
    import gymnasium as gym

    import sim

    if task not in sim.GYM_IDS:
        raise typer.BadParameter(f"unknown task {task!r}; sim tasks: {sorted(sim.GYM_IDS)}")
    return gym.make(sim.GYM_IDS[task], variation=variation)


def _stop_action(text: str) -> tuple[float | None, ...] | None:
    if not text:
        return None
    return tuple(None if v.strip() == "hold" else float(v) for v in text.split(","))


# ---------------------------------------------------------------------- registry


@registry_app.command("list")
def list_(registry: RegistryOpt = None, json: JsonOpt = False) -> None:
    """Versions (hashes, task, lineage, evaluations) and aliases."""
    doc = _registry(registry).summary()
    if json:
        emit_json(doc)
        return
    rows = [
        {
            "version": f"v{v['version']}",
            "aliases": ",".join(v["aliases"]),
            "task": v["task"],
            "algorithm": v["lineage"].get("algorithm"),
            "parent": v["lineage"].get("parent_version"),
            "success": ", ".join(f"{e['success_rate']:.2f}" for e in v["evaluations"]),
            "real episodes": v["real_episodes"],
            "registered": v["registered_at"],
        }
        for v in doc["versions"]
    ]
    table(f"registry {doc['root']}", rows)


@registry_app.command("register")
def register_(
    bundle: Annotated[str, typer.Argument(help="Bundle folder (or a name under bundles/).")],
    reason: ReasonOpt = None,
    parent: Annotated[int | None, typer.Option(help="Parent version (default: lineage).")] = None,
    candidate: Annotated[bool, typer.Option(help="Point `candidate` at it.")] = True,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
) -> None:
    """Copy a bundle into the registry as the next immutable version."""
    from flywheel.cli.learn import resolve_bundle
    from flywheel.policies import BundleError
    from flywheel.registry import RegistryError

    try:
        rec, created = _registry(registry).register(
            resolve_bundle(bundle),
            why=reason or "registered",
            parent=parent,
            set_candidate=candidate,
        )
    except (BundleError, RegistryError) as e:
        raise _fail(e) from None
    doc = {**rec.to_json(), "created": created}
    emit_json(doc) if json else key_values(
        f"v{rec.version}", {k: v for k, v in doc.items() if k != "lineage"}
    )


@registry_app.command("promote")
def promote_(
    version: Annotated[str, typer.Argument(help="Version (3, v3) or alias (candidate).")],
    to: Annotated[str, typer.Option("--to", help="staging or production.")],
    force: Annotated[
        bool, typer.Option("--force", help="Move despite failed gates (needs --reason; logged).")
    ] = False,
    reason: ReasonOpt = None,
    task: Annotated[str | None, typer.Option(help="Target task (default: the bundle's).")] = None,
    episodes: Annotated[int, typer.Option(help="Evaluation episodes per variation.")] = 50,
    min_episodes: Annotated[int, typer.Option(help="Fewer pooled episodes fail the gate.")] = 30,
    margin: Annotated[float, typer.Option(help="Required success gain over production.")] = 0.0,
    min_success: Annotated[float, typer.Option(help="Floor with no incumbent.")] = 0.0,
    variations: Annotated[
        str, typer.Option(help="Comma-separated task suite conditions.")
    ] = "none",
    seed: Annotated[int, typer.Option(help="First evaluation seed.")] = 10_000,
    latency_budget_ms: Annotated[
        float | None, typer.Option(help="Tick p99 budget (default 10% of the period).")
    ] = None,
    canary_episodes: Annotated[
        int, typer.Option(help="Real episodes without a safety stop needed for production.")
    ] = 0,
    backend: Annotated[str, typer.Option(help="onnx, torchscript or eager.")] = "onnx",
    registry: RegistryOpt = None,
    json: JsonOpt = False,
) -> None:
    """Run the promotion gates and move the alias only if all pass; exit 1 when refused."""
    from flywheel.deploy.runners import one_thread
    from flywheel.policies import BundleError
    from flywheel.registry import GateConfig, RegistryError, promote

    one_thread()
    try:
        cfg = GateConfig(
            task=task,
            variations=tuple(v.strip() for v in variations.split(",") if v.strip()),
            episodes=episodes,
            min_episodes=min_episodes,
            margin=margin,
            min_success=min_success,
            seed=seed,
            latency_budget_ms=latency_budget_ms,
            canary_episodes=canary_episodes,
            backend=backend,  # type: ignore[arg-type]
        )
        if force:
            console.print(
                "[bold red]!!! --force: the promotion gates will be overridden. This is logged "
                "with your name and reason. !!![/bold red]"
            )
        rep = promote(
            _registry(registry),
            version,
            to,
            make_env=_make_env,
            config=cfg,
            force=force,
            why=reason,
        )
    except (BundleError, RegistryError, ValueError) as e:
        raise _fail(e) from None
    if json:
        emit_json(rep.to_json())
    else:
        rows = [
            {"gate": g.name, "passed": "yes" if g.passed else "NO", "reason": g.reason}
            for g in rep.gates
        ]
        table(f"promote v{rep.version} -> {to}", rows)
        colour = {"promoted": "green", "forced": "bold red", "unchanged": "yellow"}.get(
            rep.decision, "red"
        )
        console.print(f"[{colour}]{rep.decision}[/{colour}]: {rep.reason}")
    if rep.decision == "forced":
        console.print(f"[bold red]FORCED: v{rep.version} is {to} despite failed gates.[/bold red]")
    if rep.decision == "refused":
        raise typer.Exit(1)


@registry_app.command("rollback")
def rollback_(
    reason: ReasonOpt = None, registry: RegistryOpt = None, json: JsonOpt = False
) -> None:
    """Point `production` back at `previous`, in one step."""
    from flywheel.registry import RegistryError, rollback

    try:
        out = rollback(_registry(registry), why=reason)
    except RegistryError as e:
        raise _fail(e) from None
    emit_json(out) if json else key_values("rollback", out)


@registry_app.command("audit")
def audit_(
    last: Annotated[int, typer.Option(help="Show the last N entries.")] = 20,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
) -> None:
    """The audit log: every alias move and refused promotion, who/when/why."""
    entries = _registry(registry).audit_entries()[-last:]
    if json:
        emit_json({"entries": entries})
        return
    rows = [
        {
            "seq": e["seq"],
            "time": e["time"],
            "who": e["who"],
            "op": e["op"],
            "moves": ", ".join(f"{m['alias']}: {m['from']}->{m['to']}" for m in e["moves"]),
            "why": e["why"],
        }
        for e in entries
    ]
    table("audit log", rows)


@registry_app.command("verify")
def verify_(registry: RegistryOpt = None, json: JsonOpt = False) -> None:
    """Check the audit chain, the alias cache and every version's hashes; exit 1 on problems."""
    problems = _registry(registry).verify()
    if json:
        emit_json({"ok": not problems, "problems": problems})
    else:
        for p in problems:
            console.print(f"[red]{p}[/red]")
        console.print("[green]registry ok[/green]" if not problems else f"{len(problems)} problems")
    if problems:
        raise typer.Exit(1)


# ---------------------------------------------------------------------- export


def export_command(
    version: Annotated[str, typer.Argument(help="Version (3, v3) or alias.")],
    format: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    episodes: Annotated[
        int, typer.Option(help="Sim episodes to record observations from, if none are stored.")
    ] = 4,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
) -> None:
    """Export a version; used only after parity (max abs diff <= 1e-5) on recorded observations."""
    from flywheel.deploy.deployed import recorded_observations
    from flywheel.deploy.export import FORMATS, ExportError, export_bundle, load_export
    from flywheel.deploy.observations import stack_records
    from flywheel.deploy.runners import input_keys, one_thread
    from flywheel.evaluation import evaluate
    from flywheel.policies import BundleError, NumpyPolicy
    from flywheel.registry import RegistryError

    if format not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {FORMATS}")
    one_thread()
    reg = _registry(registry)
    try:
        v = reg.resolve(version)
        bundle = reg.load(v)
        out = reg.exports_dir(v) / format
        if not (out / "export.json").is_file():
            obs = recorded_observations(reg, v)
            source = "recorded (evaluation rollouts)"
            if obs is None:
                task = bundle.schema["task"]
                r = evaluate(
                    NumpyPolicy(bundle.actor),
                    lambda: _make_env(task, "none"),
                    episodes=episodes,
                    seed=0,
                    keep_records=True,
                )
                obs = stack_records(r.records, input_keys(bundle.actor))
                source = f"recorded ({episodes} sim episodes of {task})"
            export_bundle(bundle, format, out, obs, source=source)  # type: ignore[arg-type]
        load_export(bundle, format, out)  # type: ignore[arg-type]  (re-checks hash and parity)
    except (BundleError, RegistryError, ExportError) as e:
        raise _fail(e) from None
    import json as json_

    doc = json_.loads((out / "export.json").read_text())
    result = {
        "version": v,
        "format": format,
        "path": str(out / doc["file"]),
        "sha256": doc["sha256"],
        "parity": doc["parity"],
        "observations": doc.get("observations"),
    }
    emit_json(result) if json else key_values(f"export v{v}", result)


# ---------------------------------------------------------------------- controller


@controller_app.command("serve")
def serve(
    alias: Annotated[
        str, typer.Option(help="Registry alias (or version) to serve.")
    ] = "production",
    host: Annotated[
        str, typer.Option(help="Bind address; non-loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    token: Annotated[
        str | None, typer.Option(help=f"Client token (default ${TOKEN_ENV}).", show_default=False)
    ] = None,
    backend: Annotated[str, typer.Option(help="onnx, torchscript or eager.")] = "onnx",
    max_message_bytes: Annotated[int, typer.Option(help="Largest accepted message.")] = 1 << 16,
    max_delta: Annotated[float, typer.Option(help="Per-tick action change limit (0: off).")] = 0.5,
    swap_at: Annotated[
        str, typer.Option(help="Adopt new versions at: episode or tick.")
    ] = "episode",
    stop_action: Annotated[
        str, typer.Option(help="Safe-stop action, comma-separated; `hold` keeps a dimension.")
    ] = SIM_STOP,
    registry: RegistryOpt = None,
) -> None:
    """Serve a registry alias to robots over WebSocket; follows the alias between episodes."""
    import logging

    from flywheel.deploy.controller import ControllerConfig
    from flywheel.deploy.runners import one_thread
    from flywheel.deploy.server import ServerConfig, serve_registry
    from flywheel.policies import BundleError
    from flywheel.registry import RegistryError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    one_thread()
    try:
        cfg = ServerConfig(
            host=host,
            port=port,
            token=token or os.environ.get(TOKEN_ENV) or None,
            alias=alias,
            backend=backend,  # type: ignore[arg-type]
            max_message_bytes=max_message_bytes,
            controller=ControllerConfig(
                max_delta=max_delta or None,
                swap_at=swap_at,  # type: ignore[arg-type]
                stop_action=_stop_action(stop_action),
            ),
        )
        server = serve_registry(_registry(registry), cfg)
    except (BundleError, RegistryError, ValueError) as e:
        raise _fail(e) from None
    console.print(f"serving {server.slot.latest.name} ({alias}) on {server.url}")
    server.serve_forever()


@controller_app.command("run")
def run(
    task: Annotated[str, typer.Option(help="Sim task the robot runs.")],
    server: Annotated[str, typer.Option(help="ws://host:port/ of the controller server.")],
    episodes: Annotated[int, typer.Option(help="Episodes to run.")] = 3,
    seed: Annotated[int, typer.Option(help="Episode i uses seed + i.")] = 0,
    token: Annotated[str | None, typer.Option(help=f"Token (default ${TOKEN_ENV}).")] = None,
    expect_version: Annotated[str | None, typer.Option(help="Refuse any other model.")] = None,
    expect_schema_hash: Annotated[str | None, typer.Option(help="Refuse other schemas.")] = None,
    realtime: Annotated[bool, typer.Option(help="Pace steps at the control rate.")] = True,
    json: JsonOpt = False,
) -> None:
    """A sim robot: run episodes of TASK with actions from the server."""
    from flywheel.deploy.client import ClientConfig, HandshakeError, RobotClient, ServerError
    from flywheel.deploy.robot import run_episodes

    cfg = ClientConfig(
        url=server,
        token=token or os.environ.get(TOKEN_ENV) or None,
        expect_version=expect_version,
        expect_schema_hash=expect_schema_hash,
        stop_action=_stop_action(SIM_STOP),
    )
    done = (
        (lambda r: None)
        if json
        else (
            lambda r: console.print(
                f"episode seed {r.seed}: {r.steps} steps, success {r.success}, stop {r.safety_stop}"
            )
        )
    )
    try:
        with RobotClient(cfg) as client:
            results = run_episodes(
                client,
                lambda: _make_env(task, "none"),
                episodes=episodes,
                seed=seed,
                realtime=realtime,
                progress=done,
            )
    except (HandshakeError, ServerError, OSError) as e:
        raise _fail(e) from None
    summary = {
        "task": task,
        "server": server,
        "episodes": [r.to_json() for r in results],
        "success_rate": sum(r.success for r in results) / max(1, len(results)),
        "safety_stops": sum(r.safety_stop for r in results),
    }
    emit_json(summary) if json else key_values(
        "controller run", {k: v for k, v in summary.items() if k != "episodes"}
    )


def register(app: typer.Typer) -> None:
    """Add `registry`, `export` and `controller` to the `flywheel` app."""
    app.add_typer(registry_app, name="registry")
    app.add_typer(controller_app, name="controller")
    app.command(name="export")(export_command)
