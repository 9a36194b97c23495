"""`flywheel train | refine | eval`: the learning core from the command line.

Tasks of the built-in simulator are named (`lift`, ...); any other Gymnasium env id works with
`--env` (the library only sees the Gymnasium API). This module is where `sim` is tied in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flywheel.cli.output import console, emit_json, key_values, stage_bars, table
from flywheel.home import default_corpus_path, flywheel_home

if TYPE_CHECKING:  # torch is imported lazily: `--help` stays fast
    from flywheel.policies import Bundle
    from flywheel.runtime import Runtime

CorpusOpt = Annotated[Path | None, typer.Option("--corpus", help="Corpus path.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
EnvOpt = Annotated[
    str | None, typer.Option("--env", help="A Gymnasium env id instead of the sim task's.")
]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")]
CompileOpt = Annotated[
    bool, typer.Option(help="torch.compile the update steps (pays off for long runs).")
]
ThreadsOpt = Annotated[int, typer.Option(help="torch CPU threads.")]


def env_factory(task: str, env_id: str | None = None, variation: str = "none", cameras: Mapping[str, Sequence[int]] | None = None) -> Callable:  # fmt: skip
    """A zero-argument env constructor for a sim task (or any Gymnasium id; Hopper-v5 comes
    as `sim.hopper.HopperV5`, which env pools step batched).

    `cameras` ({name: (H, W, C)}, an image policy's `spec.cameras`): the sim renders those
    cameras at that size, so the policy sees what it was trained on.
    """
    import gymnasium as gym

    cameras = dict(cameras or {})
    if env_id is not None:
        if cameras:
            raise typer.BadParameter(f"the policy sees cameras {sorted(cameras)}: --env {env_id} cannot render them")  # fmt: skip
        if env_id == "Hopper-v5":  # the same MDP, written batched: ~1.7x less CPU per step
            from sim.hopper import HopperV5

            return HopperV5()
        return lambda: gym.make(env_id)
    import sim

    if task not in sim.GYM_IDS:
        raise typer.BadParameter(f"unknown task {task!r}; sim tasks: {sorted(sim.GYM_IDS)}")
    sizes = {tuple(s[:2]) for s in cameras.values()}
    if len(sizes) > 1 or any(h != w for h, w in sizes):
        raise typer.BadParameter(f"the sim renders square images of one size; the policy's cameras are {cameras}")  # fmt: skip
    kwargs: dict[str, Any] = {"variation": variation}
    if cameras:
        kwargs.update(cameras=tuple(cameras), image_size=int(next(iter(sizes))[0]))
    return lambda: gym.make(sim.GYM_IDS[task], **kwargs)


def resolve_bundle(ref: str) -> Path:
    """A bundle path, or a name under $FLYWHEEL_HOME/bundles."""
    p = Path(ref)
    if p.is_dir():
        return p
    q = flywheel_home() / "bundles" / ref
    if q.is_dir():
        return q
    raise typer.BadParameter(f"no bundle at {ref}" + (f" or {q}" if q != p else ""))


def open_bundle(ref: str, *, with_value: bool = True) -> tuple[Path, Bundle]:
    """`resolve_bundle`, then load it; a folder that is not a valid bundle is a clear error."""
    from flywheel.policies import BundleError, load_bundle

    path = resolve_bundle(ref)
    try:
        return path, load_bundle(path, with_value=with_value)
    except BundleError as e:
        raise typer.BadParameter(str(e)) from None


def success_terminates(env_id: str | None) -> bool:
    """Whether an episode's termination means success: in our sim tasks it does (they end on
    success, `algorithms.base.absorbing_reward`); a Gymnasium env such as Hopper-v5 terminates on
    failure (a fall), where treating the end as absorbing success would reward falling."""
    return env_id is None


def _runtime(device: str, threads: int, compile: bool) -> Runtime:
    from flywheel.runtime import Runtime

    try:
        return Runtime(device=device, threads=threads, compile=compile)  # type: ignore[arg-type]
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def register(app: typer.Typer) -> None:
    """Add train, refine and eval to the `flywheel` app."""

    @app.command()
    def train(
        task: Annotated[str, typer.Option(help="Task to train on (its corpus episodes).")],
        algo: Annotated[str, typer.Option(help="bc (one-step) or multistep.")] = "multistep",
        steps: Annotated[
            int, typer.Option(help="Gradient steps per stage (BC, IQL, improvement).")
        ] = 3000,
        gate_every: Annotated[int, typer.Option(help="Improvement steps per generation.")] = 250,
        seed: Annotated[int, typer.Option()] = 0,
        failure_weight: Annotated[float, typer.Option(help="BC weight of failed episodes.")] = 0.0,
        awr_weight: Annotated[
            float | None,
            typer.Option(
                help="Weight of the improvement's AWR term on dataset actions (0: PPO-clip only; default: MultiStepConfig's)."
            ),
        ] = None,
        sim_gate: Annotated[
            bool, typer.Option(help="Gate generations on sim rollouts too.")
        ] = True,
        gate_episodes: Annotated[
            int | None,
            typer.Option(
                help="Sim rollouts per gate decision (default: MultiStepConfig's; fewer for long episodes, at the cost of the gate's power)."
            ),
        ] = None,
        cameras: Annotated[str, typer.Option(help="Comma-separated cameras the policy sees.")] = "",
        device: DeviceOpt = "auto",
        compile: CompileOpt = False,
        threads: ThreadsOpt = 1,
        corpus: CorpusOpt = None,
        env: EnvOpt = None,
        json: JsonOpt = False,
    ) -> None:
        """Train a policy on the corpus snapshot of TASK; re-running resumes a killed run."""
        from dataclasses import replace

        from flywheel.corpus import Corpus, CorpusError
        from flywheel.training import OfflineConfig, train_offline

        if algo not in ("bc", "multistep"):
            raise typer.BadParameter("--algo must be bc or multistep")
        try:
            cfg = OfflineConfig(
                runtime=_runtime(device, threads, compile),
                task=task,
                algo=algo,  # type: ignore[arg-type]
                seed=seed,
                bc_steps=steps,
                iql_steps=steps,
                failure_weight=failure_weight,
                cameras=tuple(c for c in cameras.split(",") if c),
            )
            given = {"awr_weight": awr_weight, "sim_episodes": gate_episodes}
            ms = replace(cfg.multistep, steps=steps, gate_every=min(gate_every, steps), **{k: v for k, v in given.items() if v is not None})  # fmt: skip
            cfg = replace(cfg, multistep=ms, iql=replace(cfg.iql, absorbing_terminal=success_terminates(env)))  # fmt: skip
            data = Corpus(corpus or default_corpus_path())
            env_fn = None
            if sim_gate and algo == "multistep":  # the gate's rollouts render what the policy sees
                feats = {c: data.spec.get(f"images/{c}") for c in cfg.cameras}
                shapes = {c: f.shape for c, f in feats.items() if f is not None}
                env_fn = env_factory(task, env, cameras=shapes)
            with stage_bars(enabled=not json) as bars:
                out = train_offline(data, cfg, home=flywheel_home(), env_fn=env_fn, progress=bars)
        except (CorpusError, ValueError) as e:  # a bad setting, no corpus, no episodes of TASK
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from None
        if json:
            emit_json(out)
            return
        console.print(f"bundle: {out['bundle']}")
        gens = out["metrics"].get("generations", [])
        if gens:
            cols = ["generation", "step", "ope_candidate", "ope_accepted", "sim_candidate", "sim_accepted", "sim_gain", "sim_seed", "accepted", "reason"]  # fmt: skip
            table("generations", gens, cols)

    @app.command()
    def refine(
        bundle: Annotated[str, typer.Argument(help="Bundle path or name.")],
        task: Annotated[str, typer.Option(help="Task to refine on.")],
        env_steps: Annotated[int, typer.Option(help="Online env-step budget.")] = 40_000,
        algo: Annotated[str, typer.Option(help="sac (RLPD-style) or ppo.")] = "sac",
        seed: Annotated[int, typer.Option()] = 0,
        eval_episodes: Annotated[int, typer.Option()] = 20,
        record: Annotated[bool, typer.Option(help="Append online episodes to the corpus.")] = True,
        env_workers: Annotated[
            int | None,
            typer.Option(
                help="Processes stepping envs beside this one (default: per core, long runs)."
            ),
        ] = None,
        compile: CompileOpt = False,
        threads: ThreadsOpt = 1,
        corpus: CorpusOpt = None,
        env: EnvOpt = None,
        json: JsonOpt = False,
    ) -> None:
        """Refine a bundle with online RL; online episodes go to the corpus as `online`."""
        from flywheel.algorithms.ppo import PPOConfig
        from flywheel.algorithms.sac import SACConfig
        from flywheel.corpus import Corpus
        from flywheel.online import RefineConfig
        from flywheel.online import refine as run_refine

        try:  # before the bundle is loaded: a typo should fail at once
            absorbing = success_terminates(env)
            cfg = RefineConfig(algo=algo, env_steps=env_steps, seed=seed, eval_episodes=eval_episodes, env_workers=env_workers, runtime=_runtime("cpu", threads, compile),  # type: ignore[arg-type]
                               ppo=PPOConfig(absorbing_terminal=absorbing), sac=SACConfig(absorbing_terminal=absorbing))  # fmt: skip
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        src, b = open_bundle(bundle)
        if env is None and task != b.schema["task"]:  # its online episodes would be mislabelled
            raise typer.BadParameter(f"{src} is a {b.schema['task']!r} policy, not a {task!r} one: its online episodes would go into the corpus under the wrong task")  # fmt: skip
        out = flywheel_home() / "bundles" / f"{src.name}-{algo}-s{seed}-{env_steps}"
        c = Corpus.open_or_create(corpus or default_corpus_path()) if record else None
        with stage_bars(enabled=not json) as bars:
            res = run_refine(b, env_factory(task, env, cameras=b.spec.cameras), cfg, out=out, corpus=c, progress=lambda d, t: bars("online", d, t))  # fmt: skip
        if json:
            emit_json(res)
        else:
            key_values("refine", {k: v for k, v in res.items() if k != "metrics"})

    @app.command("eval")
    def eval_(
        bundle: Annotated[str, typer.Argument(help="Bundle path or name.")],
        task: Annotated[str, typer.Option(help="Task to evaluate on.")],
        episodes: Annotated[int, typer.Option()] = 20,
        seed: Annotated[int, typer.Option()] = 0,
        variation: Annotated[
            str, typer.Option(help="Sim domain-randomisation condition.")
        ] = "none",
        env: EnvOpt = None,
        json: JsonOpt = False,
    ) -> None:
        """Success rate and return of a bundle over seeded episodes."""
        from flywheel.evaluation import evaluate
        from flywheel.policies import NumpyPolicy

        if episodes < 1:  # before the bundle is loaded and envs are made
            raise typer.BadParameter(f"--episodes must be at least 1, not {episodes}")
        _, b = open_bundle(bundle, with_value=False)
        r = evaluate(
            NumpyPolicy(b.actor),
            env_factory(task, env, variation, b.spec.cameras),
            episodes=episodes,
            seed=seed,
        )
        emit_json(r.to_json()) if json else key_values("eval", r.to_json())
