"""Prefect artifacts for the flywheel: a metrics table per round, a markdown report with plots.

Plots are PNG files under `$FLYWHEEL_HOME/reports/`, linked from the markdown artifact (the
Prefect UI shows the table and the report; the images open from the local files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STAGES = ("bc", "multistep", "online")


def round_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task: success after each stage, what was deployed, episodes added."""
    return [
        {
            "round": result["round"],
            "task": t,
            **{s: round(v[s], 3) for s in STAGES},
            "deployed": v["deployed"],
            "production": f"v{v['production_version']} ({v['promotion']})"
            if v.get("production_version") is not None
            else v.get("promotion", "-"),
            "episodes_added": result["collected"][t]["episodes"],
            "online_env_steps": v["online_env_steps"],
            "ope_multistep": None if v.get("ope_accepted") is None else round(v["ope_accepted"], 3),
            "true_multistep": round(v["multistep"], 3),
            "generations_accepted": f"{v['accepted_generations']}/{v['generations']}",
        }
        for t, v in result["tasks"].items()
    ]


def publish_round(result: dict[str, Any], home: Path) -> None:
    """Table artifact of one round (also inside a flow: Prefect attaches it to the run)."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(
        key=f"flywheel-round-{result['round']}",
        table=round_rows(result),
        description=f"Success per task after each stage, round {result['round']}",
    )


def plot_rounds(results: list[dict[str, Any]], path: Path) -> Path:
    """Success per round and stage, one line per (task, stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    rounds = [r["round"] for r in results]
    for t in results[0]["tasks"]:
        for s, style in zip(STAGES, (":", "--", "-"), strict=True):
            ax.plot(
                rounds, [r["tasks"][t][s] for r in results], style, marker="o", label=f"{t} {s}"
            )
    ax.set(
        xlabel="round", ylabel="success rate", ylim=(0, 1.02), title="flywheel: success per round"
    )
    ax.set_xticks(rounds)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def record_video(bundle: str, task: str, path: Path, seed: int = 0) -> Path:
    """One episode of a bundle in the sim, seen by the front camera, as an mp4."""
    import gymnasium as gym
    import numpy as np

    import sim
    from flywheel.corpus.video import write_mp4
    from flywheel.policies import NumpyPolicy, load_bundle

    policy = NumpyPolicy(load_bundle(bundle, with_value=False).actor)
    env = gym.make(sim.GYM_IDS[task], render_mode="rgb_array")
    try:
        obs, _ = env.reset(seed=seed)
        frames = [env.render()]
        done = False
        while not done:
            obs, _, term, trunc, _ = env.step(policy.single(obs))
            frames.append(env.render())
            done = term or trunc
    finally:
        env.close()
    write_mp4(path, np.stack(frames), fps=20.0)
    return path


def plot_learning_curves(results: list[dict[str, Any]], path: Path) -> Path:
    """Per task, last round: multi-step generations (OPE of the candidate, sim success of the
    candidate and of the accepted policy) and online success vs env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = results[-1]["tasks"]
    fig, axes = plt.subplots(len(last), 2, figsize=(8, 2.8 * len(last)), dpi=100, squeeze=False)
    for row, (t, v) in zip(axes, last.items(), strict=True):
        gens = v.get("generation_log", [])
        xs = [g["generation"] for g in gens]
        ope = [
            g["ope_candidate"] if g["ope_candidate"] is not None else g["ope_accepted"]
            for g in gens
        ]
        row[0].plot(xs, ope, "o-", label="OPE (AM-Q) of candidate")
        ax2 = row[0].twinx()
        ax2.plot(xs, [g["sim_candidate"] if g["sim_candidate"] is not None else g["sim_accepted"] for g in gens], "s--", color="C1", label="sim success of candidate")  # fmt: skip
        ax2.plot(
            xs, [g["sim_accepted"] for g in gens], ":", color="C2", label="sim success of accepted"
        )
        ax2.set_ylim(0, 1.02)
        row[0].set(title=f"{t}: multi-step generations", xlabel="generation", ylabel="AM-Q")
        row[0].legend(loc="lower left", fontsize=7)
        ax2.legend(loc="lower right", fontsize=7)
        hist = v.get("online_log", [])
        row[1].plot(
            [0] + [h["env_steps"] for h in hist],
            [v["multistep"]] + [h["success"] for h in hist],
            "o-",
        )
        row[1].set(
            title=f"{t}: online refinement", xlabel="env steps", ylabel="success", ylim=(0, 1.02)
        )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def publish_summary(results: list[dict[str, Any]], home: Path) -> str:
    """Markdown report of all rounds with the plot and corpus composition; returns the text."""
    from prefect.artifacts import create_markdown_artifact

    from flywheel.corpus import Corpus

    png = plot_rounds(results, home / "reports" / "success_per_round.png")
    curves = plot_learning_curves(results, home / "reports" / "learning_curves.png")
    info = Corpus(home / "corpus.zarr").info() if (home / "corpus.zarr").exists() else {}
    lines = ["# Flywheel report", "", f"![success per round]({png.resolve().as_uri()})", "",
             f"![learning curves]({curves.resolve().as_uri()})", "",
             "| round | task | bc | multistep | online | deployed |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        for row in round_rows(r):
            lines.append(f"| {row['round']} | {row['task']} | {row['bc']} | {row['multistep']} | {row['online']} | {row['deployed']} |")  # fmt: skip
    lines += ["", "## Videos of the deployed policies (last round)", ""]
    for t, bundle in results[-1]["deployed"].items():
        try:
            mp4 = record_video(bundle, t, home / "reports" / f"{t}-deployed.mp4")
            lines.append(f"- [{t}]({mp4.resolve().as_uri()})")
        except Exception as e:  # a report without a video beats no report
            lines.append(f"- {t}: no video ({type(e).__name__}: {e})")
    if info:
        lines += ["", "## Corpus", "", f"{info['episodes']} episodes, {info['frames']} steps", "",
                  "| source | episodes |", "|---|---|"] + [f"| {k} | {v} |" for k, v in info["by_source"].items()]  # fmt: skip
    text = "\n".join(lines)
    (home / "reports").mkdir(parents=True, exist_ok=True)
    (home / "reports" / "report.md").write_text(text)
    create_markdown_artifact(key="flywheel-report", markdown=text, description="Flywheel rounds")
    return text
