"""Collection: complete episodes with correct metadata land in the corpus."""

from __future__ import annotations

import numpy as np
import pytest

corpus_mod = pytest.importorskip("flywheel.corpus", reason="flywheel.corpus not available")

import sim  # noqa: E402
from sim.collect import POLICY_LOADERS, collect, state_key  # noqa: E402


def test_expert_collection_writes_complete_episodes(tmp_path):
    path = tmp_path / "c.zarr"
    result = collect("lift", 2, noise=0.0, seed=3, cameras=("front",), corpus_path=path)
    assert result["episodes"] == 2 and result["success_rate"] == 1.0
    assert result["env_steps"] > 0 and result["seconds"] > 0
    corpus = corpus_mod.Corpus.open_or_create(path)
    for episode_id in result["episode_ids"]:
        ep = corpus.read(episode_id)
        T = ep.length
        assert ep.action.shape == (T, 4)
        assert ep.obs["cube_pos"].shape == (T + 1, 3)
        assert ep.images["front"].shape == (T + 1, 84, 84, 3)
        assert ep.extras[state_key("lift")].shape[0] == T + 1
        assert ep.timestamp[-1] == pytest.approx(T / 20.0)
        assert ep.terminated[-1] and not ep.terminated[:-1].any()  # ended on success
        m = ep.meta
        assert (m.source, m.task, m.robot, m.policy_version) == (
            "sim",
            "lift",
            sim.ROBOT_NAME,
            "expert",
        )
        assert m.success is True and m.control_hz == 20.0
        assert m.info["noise"] == 0.0 and m.info["seed"] in (3, 4)
        assert "condition" in m.info["randomisation"]
    # the same run again commits nothing new
    again = collect("lift", 2, noise=0.0, seed=3, cameras=("front",), corpus_path=path)
    assert again["duplicates"] == 2


def test_failed_episodes_are_labelled(tmp_path, monkeypatch):
    class Idle:
        version = "idle-v1"

        def reset(self, index, seed=None):
            pass

        def __call__(self, obs):
            return np.zeros((len(obs["ee_pos"]), 4), np.float32)

    monkeypatch.setitem(POLICY_LOADERS, "idle", lambda **kw: Idle())
    result = collect("reach", 1, policy="idle", corpus_path=tmp_path / "c.zarr")
    assert result["success_rate"] == 0.0
    ep = corpus_mod.Corpus.open_or_create(tmp_path / "c.zarr").read(result["episode_ids"][0])
    assert ep.meta.success is False and ep.meta.policy_version == "idle-v1"
    assert ep.truncated[-1] and ep.length == sim.default_config("reach").max_steps


def test_unknown_policy_is_a_clear_error(tmp_path):
    with pytest.raises(KeyError, match="POLICY_LOADERS"):
        collect("lift", 1, policy="nope", corpus_path=tmp_path / "c.zarr")


def test_two_spawned_workers(tmp_path):
    result = collect("reach", 4, noise=0.0, workers=2, corpus_path=tmp_path / "c.zarr")
    assert result["episodes"] == 4 and result["workers"] == 2
    corpus = corpus_mod.Corpus.open_or_create(tmp_path / "c.zarr")
    seeds = sorted(corpus.read(i, images=False).meta.info["seed"] for i in result["episode_ids"])
    assert seeds == [0, 1, 2, 3]


def test_cli_collect_json(tmp_path):
    import json

    import typer
    from typer.testing import CliRunner

    from flywheel.cli.collect import register

    app = typer.Typer()
    register(app)

    @app.command()
    def noop() -> None:  # a second command keeps typer in multi-command mode
        pass

    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "collect",
            "--task",
            "reach",
            "--episodes",
            "2",
            "--noise",
            "0",
            "--corpus",
            str(tmp_path / "c.zarr"),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["episodes"] == 2 and data["success_rate"] == 1.0
    bad = runner.invoke(app, ["collect", "--task", "nope", "--corpus", str(tmp_path / "d")])
    assert bad.exit_code == 2

    from flywheel.cli import collect as cli_collect

    assert cli_collect.DEFAULT_NOISE == sim.DEFAULT_NOISE  # the CLI mirrors it without MuJoCo
