"""Success tests and randomisation ranges, per the task definitions (issue 3):

- reach: TCP within 0.05 m of a random goal (goal +-0.15 m);
- push: cube within 0.05 m of a goal on the table (cube and goal +-0.15 m);
- lift: cube raised 0.04 m above the table (cube position and yaw randomised);
- pick_place: cube within 0.05 m of a goal (possibly in the air) and the arm nearly still;
- drawer: drawer opened to at least 80% of its range (drawer pose randomised).

Success is judged on constructed states: ones that must count, and ones just outside that
must not.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from sim.env import FlywheelEnv
from sim.tasks.base import grasped


def judge(env: FlywheelEnv) -> bool:
    mujoco.mj_forward(env.model, env.data)
    obs = env._observe()
    return env.task.evaluate(env.data, obs)[1]


def layouts(task: str, n: int = 200) -> list[dict]:
    env = FlywheelEnv(task)
    return [env.reset(seed=s)[1]["randomisation"]["layout"] for s in range(n)]


def assert_spans(values: np.ndarray, centre, half_range: float) -> None:
    """Every draw lies within centre +- half_range per axis, and the draws fill most of it."""
    values, centre = np.asarray(values), np.asarray(centre)
    assert np.all(np.abs(values - centre) <= half_range + 1e-9)
    assert np.all(values.max(0) - values.min(0) > 1.6 * half_range)


# ----------------------------------------------------------------------------- reach


def test_reach_radius_is_5cm():
    env = FlywheelEnv("reach")
    env.reset(seed=0)
    tcp = env.data.site_xpos[env.ids.tcp].copy()
    assert not judge(env)  # the goal region (z <= 0.35) lies below the home TCP (z 0.41)
    for direction in np.eye(3):
        env.data.mocap_pos[env.task.mocap] = tcp + 0.048 * direction
        assert judge(env)
        env.data.mocap_pos[env.task.mocap] = tcp + 0.052 * direction
        assert not judge(env)
    env.data.mocap_pos[env.task.mocap] = tcp + np.array([0.03, 0.03, 0.03])  # 5.2 cm away
    assert not judge(env)


def test_reach_goal_region_is_15cm_each_axis():
    cfg = FlywheelEnv("reach").task.config
    goals = [lay["goal_pos"] for lay in layouts("reach")]
    assert_spans(goals, cfg.goal_centre, 0.15)


# ----------------------------------------------------------------------------- push


def test_push_radius_is_5cm_on_the_table():
    env = FlywheelEnv("push")
    env.reset(seed=0)
    cube, goal, half = env.task.cube, env.task.goal, env.task.half
    assert not judge(env)  # never starts solved
    for dx, dy in ((0.048, 0.0), (0.0, -0.048), (0.034, 0.034)):
        cube.place(env.data, np.array([goal[0] + dx, goal[1] + dy, half]))
        assert judge(env), (dx, dy)
    for dx, dy in ((0.052, 0.0), (0.0, -0.052), (0.037, 0.037)):
        cube.place(env.data, np.array([goal[0] + dx, goal[1] + dy, half]))
        assert not judge(env), (dx, dy)
    cube.place(env.data, np.array([goal[0], goal[1], half + 0.06]))
    assert not judge(env)  # over the goal but lifted off the table


def test_push_cube_and_goal_regions_are_15cm():
    cfg = FlywheelEnv("push").task.config
    lays = layouts("push")
    cubes = np.array([lay["cube_xy"] for lay in lays])
    goals = np.array([lay["goal_xy"] for lay in lays])
    assert_spans(cubes, cfg.centre, 0.15)
    assert_spans(goals, cfg.centre, 0.15)
    assert cfg.min_distance > cfg.success_radius == 0.05  # no episode starts solved
    assert np.all(np.linalg.norm(cubes - goals, axis=1) >= cfg.min_distance)


# ----------------------------------------------------------------------------- lift


def test_lift_height_is_4cm():
    env = FlywheelEnv("lift")
    env.reset(seed=0)
    cube = env.task.cube
    assert not judge(env)  # resting on the table
    pos = cube.pos(env.data).copy()
    cube.place(env.data, pos + np.array([0, 0, 0.038]))
    assert not judge(env)  # not high enough
    cube.place(env.data, pos + np.array([0, 0, 0.041]))
    assert judge(env)
    cube.place(env.data, pos + np.array([0, 0, 0.2]))
    assert judge(env)


def test_lift_position_and_yaw_are_randomised():
    lays = layouts("lift", 50)
    xy = np.array([lay["cube_xy"] for lay in lays])
    yaw = np.array([lay["cube_yaw"] for lay in lays])
    assert np.all(xy.std(0) > 0.03) and yaw.std() > 0.05


# ----------------------------------------------------------------------------- pick_place


def pick_place_env(air: bool) -> FlywheelEnv:
    env = FlywheelEnv("pick_place")
    for seed in range(50):
        _, info = env.reset(seed=seed)
        if info["randomisation"]["layout"]["goal_in_air"] == air:
            return env
    raise AssertionError("no such goal in 50 seeds")


def set_arm_speed(env: FlywheelEnv, speed: float) -> None:
    qvel = np.linspace(1.0, -0.5, 7)
    env.data.qvel[env.ids.dof] = qvel * (speed / np.linalg.norm(qvel))


@pytest.mark.parametrize("air", [False, True])
def test_pick_place_radius_is_5cm(air):
    env = pick_place_env(air)
    cube, goal = env.task.cube, env.task.goal
    assert not judge(env)  # cube at its start, 15 cm or more away
    cube.place(env.data, goal.copy())
    assert judge(env)
    for offset in ([0.048, 0, 0], [0, 0.048, 0], [0, 0, 0.048], [0.028, 0.028, 0.028]):
        cube.place(env.data, goal + np.array(offset))
        assert judge(env), offset
    for offset in ([0.052, 0, 0], [0, -0.052, 0], [0, 0, 0.052], [0.03, 0.03, 0.03]):
        cube.place(env.data, goal + np.array(offset))
        assert not judge(env), offset


def test_pick_place_needs_the_arm_nearly_still():
    env = pick_place_env(air=True)
    env.task.cube.place(env.data, env.task.goal.copy())
    still = env.task.config.still_speed
    set_arm_speed(env, 0.8 * still)
    assert judge(env)
    set_arm_speed(env, 1.2 * still)
    assert not judge(env)  # cube in place, arm still moving
    set_arm_speed(env, 0.5)
    assert not judge(env)


def test_pick_place_does_not_need_a_release():
    """An air goal can only be met holding the cube: a closed jaw on it still counts."""
    env = pick_place_env(air=True)
    env.data.qpos[env.ids.finger_qpos] = 0.017
    mujoco.mj_forward(env.model, env.data)
    tcp = env.data.site_xpos[env.ids.tcp].copy()
    env.task.cube.place(env.data, tcp.copy())
    env.task.goal = tcp + np.array([0.0, 0.0, 0.03])
    mujoco.mj_forward(env.model, env.data)
    assert grasped(env.data, env.ids.pads, env.task.cube.geom)  # both pads on the cube
    assert judge(env)


def test_pick_place_goals_on_the_table_and_in_the_air():
    env = FlywheelEnv("pick_place")
    half = env.task.config.cube_half
    lays = layouts("pick_place")
    z = np.array([lay["goal_pos"][2] for lay in lays])
    air = np.array([lay["goal_in_air"] for lay in lays])
    assert 0.3 < air.mean() < 0.7
    np.testing.assert_allclose(z[~air], half)  # resting on the table
    assert np.all(z[air] >= half + 0.05)  # out of reach of a cube lying on the table
    assert z[air].max() > half + 0.15


# ----------------------------------------------------------------------------- drawer


def test_drawer_success_is_80_percent_of_the_range():
    env = FlywheelEnv("drawer")
    env.reset(seed=0)
    joint = env.model.joint("drawer").id
    lo, hi = env.model.jnt_range[joint]
    threshold = lo + 0.8 * (hi - lo)
    assert hi - lo == pytest.approx(env.task.config.travel)
    assert not judge(env)
    env.data.qpos[env.task.qpos] = 0.5 * hi
    assert not judge(env)
    env.data.qpos[env.task.qpos] = threshold - 0.002
    assert not judge(env)
    env.data.qpos[env.task.qpos] = threshold + 0.001
    assert judge(env)
    env.data.qpos[env.task.qpos] = hi
    assert judge(env)


def test_drawer_pose_is_randomised():
    env = FlywheelEnv("drawer")
    poses, handles = [], []
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        lay = info["randomisation"]["layout"]
        mocap = env.task.mocap
        yaw = 2 * np.arctan2(env.data.mocap_quat[mocap][3], env.data.mocap_quat[mocap][0])
        assert yaw == pytest.approx(lay["cabinet_yaw"])
        poses.append([*env.data.mocap_pos[mocap][:2], yaw])
        handles.append(obs["handle_pos"][:2])
        # the drawer slides along the cabinet's axis: opening moves the handle along it
        before = env.data.geom_xpos[env.task.handle].copy()
        env.data.qpos[env.task.qpos] += 0.1
        mujoco.mj_forward(env.model, env.data)
        moved = env.data.geom_xpos[env.task.handle] - before
        np.testing.assert_allclose(
            moved[:2], -0.1 * np.array([np.cos(yaw), np.sin(yaw)]), atol=1e-6
        )
    poses = np.array(poses)
    assert np.all(poses.std(0) > [0.02, 0.05, 0.1])  # x, y and yaw all vary
    assert np.array(handles).std(0).min() > 0.02
