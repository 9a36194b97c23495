"""`flywheel ingest SRC...` and `flywheel ingest quarantine` on an app built like the main one."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from flywheel.cli.ingest import EXIT_QUARANTINED, register
from tests.ingest import fixtures as fx


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()

    @root.command()
    def version() -> None:  # a sibling command, as in the main app
        """Print nothing."""

    register(root)
    return root


def invoke(app, *args, env=None):
    res = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


def test_ingest_json_then_rerun_then_quarantine_listing(app, tmp_path):
    good = fx.lerobot_v21(tmp_path / "good", [6, 7])
    bad = fx.lerobot_v21(tmp_path / "bad", [6, 5], video_frames={1: 2})
    c = tmp_path / "c.zarr"
    res = invoke(app, "ingest", good, "--corpus", c, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["accepted"]) == 2 and out["quarantined"] == [] and out["duplicates"] == 0

    res = invoke(app, "ingest", good, bad, "--format", "lerobot", "--corpus", c, "--json")
    assert res.exit_code == EXIT_QUARANTINED == 3
    out = json.loads(res.stdout)
    assert out["duplicates"] == 2 and len(out["accepted"]) == 1
    (q,) = out["quarantined"]
    assert q["source"] == f"{bad}#1" and "frame count mismatch" in q["reason"]

    res = invoke(app, "ingest", "quarantine", "--corpus", c, "--json")
    assert res.exit_code == 0
    (rec,) = json.loads(res.stdout)["quarantined"]
    assert rec["source"] == q["source"] and rec["key"] == "observation.images.front"
    assert rec["reason"] == q["reason"]


def test_default_corpus_is_under_flywheel_home(app, tmp_path):
    ds = fx.dir_episode(tmp_path / "ep")
    res = invoke(
        app,
        "ingest",
        ds,
        "--json",
        "--image-size",
        "12x16",
        env={"FLYWHEEL_HOME": str(tmp_path / "home")},
    )
    assert res.exit_code == 0, res.output
    from flywheel.corpus import Corpus

    c = Corpus(tmp_path / "home" / "corpus.zarr")
    (e,) = c.entries()
    assert c.read(e.episode_id).images["front"].shape[1:] == (12, 16, 3)


def test_human_output_and_exit_codes(app, tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"\0")
    res = invoke(app, "ingest", tmp_path / "junk.bin", "--corpus", tmp_path / "c.zarr")
    assert res.exit_code == 3 and "unrecognised" in res.output
    res = invoke(
        app, "ingest", tmp_path / "junk.bin", "--task", "pick cube", "--corpus", tmp_path / "c.zarr"
    )
    assert res.exit_code == 2 and "not a corpus label" in res.output
    (tmp_path / "m.toml").write_text("control_hz = 10\n")
    fx.ros_bag(tmp_path / "run.mcap")
    res = invoke(
        app,
        "ingest",
        tmp_path / "run.mcap",
        "--mapping",
        tmp_path / "m.toml",
        "--corpus",
        tmp_path / "new.zarr",
    )
    assert res.exit_code == 2 and "[action]" in res.output
    assert not (tmp_path / "new.zarr").exists()  # refused before anything was created
    res = invoke(app, "ingest", "quarantine", "--corpus", tmp_path / "nope.zarr")
    assert res.exit_code == 2 and "not a flywheel corpus" in res.output
    res = invoke(app, "ingest", "--help")
    assert res.exit_code == 0 and "quarantine" in res.output
