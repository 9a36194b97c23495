"""Bad learning-command input is refused at once, with the option and the choices named."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.policies import GaussianActor, Normalizer, PolicySpec, save_bundle


def _reach_bundle(path):
    spec = PolicySpec(obs_shapes={"ee_pos": (3,)}, action_dim=4, hidden=(8,))
    return save_bundle(path, GaussianActor(spec, Normalizer(spec.obs_shapes)), task="reach", control_hz=20.0, lineage={})  # fmt: skip


def test_an_unknown_refinement_algorithm_is_refused_before_any_work(tmp_path):
    env = {"FLYWHEEL_HOME": str(tmp_path / "home")}
    for args in (["refine", "no-such-bundle", "--task", "lift", "--algo", "td3"], ["run", "--refine-algo", "td3"]):  # fmt: skip
        res = CliRunner().invoke(app, args, env=env)
        assert res.exit_code == 2, res.output
        assert "ppo, sac" in res.output and "'td3'" in res.output
    assert not (tmp_path / "home" / "prefect").exists()  # `run` stopped before Prefect was set up


def test_a_negative_online_budget_or_no_evaluation_episodes_is_refused_before_any_work(tmp_path):
    env = {"FLYWHEEL_HOME": str(tmp_path / "home"), "COLUMNS": "1000"}
    res = CliRunner().invoke(app, ["run", "--online-steps", "-5"], env=env)
    assert res.exit_code == 2, res.output
    assert "--online-steps" in res.output and "-5 (0 skips refinement)" in res.output
    for command in ("run", "serve"):
        res = CliRunner().invoke(app, [command, "--eval-episodes", "0"], env=env)
        assert res.exit_code == 2, res.output
        assert "--eval-episodes" in res.output and "at least 1 evaluation episode" in res.output
    assert not (tmp_path / "home" / "prefect").exists()


def test_refine_refuses_a_zero_budget_another_tasks_policy_and_a_folder_that_is_no_bundle(tmp_path):  # fmt: skip
    env = {"FLYWHEEL_HOME": str(tmp_path / "home"), "COLUMNS": "1000"}  # no wrapping of long paths
    bundle = _reach_bundle(tmp_path / "reach-policy")
    cases = {  # arguments -> what the error must name
        (str(bundle), "--task", "reach", "--env-steps", "0"): "env_steps (0)",
        (str(bundle), "--task", "push"): "not a 'push' one",
        (str(tmp_path), "--task", "reach"): "manifest.json: unreadable",
    }
    for args, want in cases.items():
        res = CliRunner().invoke(app, ["refine", *args], env=env)
        assert res.exit_code == 2, res.output
        assert want in res.output, res.output
    assert not (tmp_path / "home" / "corpus.zarr").exists()  # nothing was recorded


def test_eval_refuses_no_episodes_instead_of_reporting_nan(tmp_path):
    env = {"FLYWHEEL_HOME": str(tmp_path / "home"), "COLUMNS": "1000"}
    bundle = _reach_bundle(tmp_path / "reach-policy")
    for n in ("0", "-3"):
        res = CliRunner().invoke(app, ["eval", str(bundle), "--task", "reach", "--episodes", n, "--json"], env=env)  # fmt: skip
        assert res.exit_code == 2, res.output
        assert f"--episodes must be at least 1, not {n}" in res.output, res.output


def test_evaluate_refuses_a_count_of_no_whole_episodes():
    from flywheel.evaluation import evaluate

    for n in (0, -1, 2.5):
        with pytest.raises(ValueError, match="episodes must be a whole number"):
            evaluate(lambda o: o, lambda: None, episodes=n)


def test_on_a_gymnasium_env_terminations_are_not_taken_for_success(tmp_path):
    """Our sim tasks end on success (absorbing); Hopper ends on a fall, which must not pay."""
    import json

    spec = PolicySpec(obs_shapes={"state": (11,)}, action_dim=3, hidden=(8,))
    bundle = save_bundle(tmp_path / "hopper-policy", GaussianActor(spec, Normalizer(spec.obs_shapes)), task="hopper", control_hz=125.0, lineage={})  # fmt: skip
    env = {"FLYWHEEL_HOME": str(tmp_path / "home")}
    args = ["refine", str(bundle), "--task", "hopper", "--env", "Hopper-v5", "--env-steps", "64", "--eval-episodes", "1", "--no-record", "--json"]  # fmt: skip
    res = CliRunner().invoke(app, args, env=env)
    assert res.exit_code == 0, res.output
    lineage = json.loads((tmp_path / "home" / "bundles" / "hopper-policy-sac-s0-64" / "lineage.json").read_text())  # fmt: skip
    assert lineage["config"]["sac"]["absorbing_terminal"] is False
    assert lineage["config"]["ppo"]["absorbing_terminal"] is False


def test_train_refuses_a_bad_improvement_setting_with_its_values(tmp_path):
    env = {"FLYWHEEL_HOME": str(tmp_path / "home"), "COLUMNS": "1000"}
    cases = {("--steps", "0"): "not steps 0, gate_every 0", ("--awr-weight", "-1"): "not -1.0, 1.0, 100.0", ("--gate-episodes", "1"): "sim_episodes must be at least 2, not 1", ("--seed", "-1"): "seed must be a non-negative integer, not -1"}  # fmt: skip
    for args, want in cases.items():
        res = CliRunner().invoke(app, ["train", "--task", "lift", *args], env=env)
        assert res.exit_code == 2, res.output
        assert want in res.output, res.output
    assert not (tmp_path / "home" / "runs").exists()  # refused before any work


def test_hopper_comes_batched():
    """`--env Hopper-v5` gets the batched Hopper (same MDP, tests/sim/test_hopper.py)."""
    from flywheel.cli.learn import env_factory
    from sim.hopper import HopperV5

    assert isinstance(env_factory("hopper", "Hopper-v5"), HopperV5)
