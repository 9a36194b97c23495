"""Every task: declared shapes, finite values, determinism, exact state round trips."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import sim
from sim.env import FlywheelEnv
from sim.tasks import TASKS
from sim.variation import Variation

ALL = sorted(TASKS)


def random_rollout(env: FlywheelEnv, seed: int, steps: int = 30):
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    rewards = []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 4))
        frames.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return frames, rewards


@pytest.mark.parametrize("task", ALL)
def test_reset_step_shapes_and_finite(task):
    env = FlywheelEnv(task)
    obs, info = env.reset(seed=0)
    assert set(obs) == set(env.observation_space.spaces)
    assert env.action_space.shape == (4,)
    assert json.loads(json.dumps(info["randomisation"])) == info["randomisation"]
    for _ in range(25):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        for key, space in env.observation_space.spaces.items():
            assert obs[key].shape == space.shape, key
            assert obs[key].dtype == space.dtype, key
            assert np.isfinite(obs[key]).all(), key
        assert np.isfinite(reward)
        assert set(info) >= {"success", "reward_terms"}
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
        if terminated or truncated:
            break


def test_pick_place_relative_keys_are_the_differences_of_its_positions():
    frames, _ = random_rollout(FlywheelEnv("pick_place"), seed=3)
    for obs in frames:
        np.testing.assert_allclose(obs["tcp_to_cube"], obs["cube_pos"] - obs["ee_pos"], atol=1e-6)
        np.testing.assert_allclose(
            obs["cube_to_goal"], obs["goal_pos"] - obs["cube_pos"], atol=1e-6
        )


def test_ee_target_offset_is_where_a_zero_action_still_takes_the_hand():
    env = FlywheelEnv("lift")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["ee_target_offset"], np.zeros(3, np.float32))  # at rest
    for _ in range(3):
        obs, *_ = env.step(np.array([1.0, 0.5, -0.5, 0.0], np.float32))
    start, lead = obs["ee_pos"].copy(), obs["ee_target_offset"].copy()
    assert np.linalg.norm(lead) > 2e-3  # a moving hand trails its target
    for _ in range(20):
        obs, *_ = env.step(np.zeros(4, np.float32))
    np.testing.assert_allclose(obs["ee_pos"] - start, lead, atol=1e-3)
    assert np.linalg.norm(obs["ee_target_offset"]) < 1e-3


@pytest.mark.parametrize("task", ALL)
def test_same_seed_same_rollout(task):
    a, ra = random_rollout(FlywheelEnv(task), seed=7)
    b, rb = random_rollout(FlywheelEnv(task), seed=7)
    c, _ = random_rollout(FlywheelEnv(task), seed=8)
    assert ra == rb
    for fa, fb in zip(a, b, strict=True):
        for k in fa:
            np.testing.assert_array_equal(fa[k], fb[k])
    assert not all(np.array_equal(a[0][k], c[0][k]) for k in a[0])


@pytest.mark.parametrize("task", ALL)
def test_state_round_trip_is_bit_exact(task):
    env = FlywheelEnv(task)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        env.step(rng.uniform(-1, 1, 4))
    state = env.get_state()
    actions = rng.uniform(-1, 1, (10, 4))
    first = [env.step(a)[0]["ee_pos"] for a in actions]
    env.set_state(state)
    again = [env.step(a)[0]["ee_pos"] for a in actions]
    np.testing.assert_array_equal(np.array(first), np.array(again))


def test_time_limit_truncates():
    env = FlywheelEnv("reach")
    env.reset(seed=0)
    limit = env.task.config.max_steps
    for t in range(limit):
        _, _, terminated, truncated, _ = env.step(np.zeros(4))
        assert not terminated
        assert truncated == (t == limit - 1)


def test_gym_registration_and_make_vec():
    for task, env_id in sim.GYM_IDS.items():
        env = gym.make(env_id)
        assert env.unwrapped.task.name == task
        env.close()
    venv = gym.make_vec("flywheel/Lift-v0", num_envs=3)
    assert isinstance(venv, sim.SimVectorEnv)
    obs, _ = venv.reset(seed=0)
    assert obs["cube_pos"].shape == (3, 3)


def test_unknown_task_and_camera_are_refused():
    with pytest.raises(KeyError, match="unknown task"):
        FlywheelEnv("juggle")
    with pytest.raises(ValueError, match="unknown cameras"):
        FlywheelEnv("lift", cameras=("top",))


def test_variation_knobs_change_the_model():
    env = FlywheelEnv("lift", variation=Variation.at(object_size=1.25, object_mass=2.0))
    obs, info = env.reset(seed=0)
    cond = info["randomisation"]["condition"]
    assert cond["object_size"] == 1.25 and cond["object_mass"] == 2.0
    cube = env.task.cube
    assert env.model.geom_size[cube.geom][0] == pytest.approx(0.025)
    assert env.model.body_mass[cube.body] == pytest.approx(0.2)
    assert obs["cube_pos"][2] == pytest.approx(0.025, abs=1e-6)
    # a pinned condition can be replayed through reset options
    plain = FlywheelEnv("lift")
    plain.reset(seed=0, options={"condition": cond})
    assert plain.model.geom_size[plain.task.cube.geom][0] == pytest.approx(0.025)


def test_wide_variation_samples_differ_and_restore():
    env = FlywheelEnv("push", variation="wide")
    _, a = env.reset(seed=1)
    _, b = env.reset(seed=2)
    assert a["randomisation"]["condition"] != b["randomisation"]["condition"]
    cam = env.model.camera("front").id
    env.variation = sim.VARIATIONS["none"]
    env.reset(seed=3)
    nominal = FlywheelEnv("push").model.cam_pos[cam]
    np.testing.assert_allclose(env.model.cam_pos[cam], nominal)


def test_vector_env_autoreset_same_step():
    venv = sim.SimVectorEnv("reach", 2)
    venv.reset(seed=0)
    limit = venv.envs[0].task.config.max_steps
    for _ in range(limit):
        _, _, _, truncated, infos = venv.step(np.zeros((2, 4)))
    assert truncated.all()
    assert "final_obs" in infos and infos["final_obs"][0]["ee_pos"].shape == (3,)
    assert venv.envs[0].elapsed_steps == 0  # already reset
