"""Bad learning-command input is refused at once, with the option and the choices named."""

from __future__ import annotations

from typer.testing import CliRunner

from flywheel.cli import app


def test_an_unknown_refinement_algorithm_is_refused_before_any_work(tmp_path):
    env = {"FLYWHEEL_HOME": str(tmp_path / "home")}
    for args in (["refine", "no-such-bundle", "--task", "lift", "--algo", "td3"], ["run", "--refine-algo", "td3"]):  # fmt: skip
        res = CliRunner().invoke(app, args, env=env)
        assert res.exit_code == 2, res.output
        assert "ppo, sac" in res.output and "'td3'" in res.output
    assert not (tmp_path / "home" / "prefect").exists()  # `run` stopped before Prefect was set up
