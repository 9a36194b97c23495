"""Success tests on constructed states: what must count, and what must not."""

from __future__ import annotations

import mujoco
import numpy as np

from sim.env import FlywheelEnv


def judge(env: FlywheelEnv) -> bool:
    mujoco.mj_forward(env.model, env.data)
    obs = env._observe()
    return env.task.evaluate(env.data, obs)[1]


def test_reach():
    env = FlywheelEnv("reach")
    env.reset(seed=0)
    tcp = env.data.site_xpos[env.ids.tcp].copy()
    env.data.mocap_pos[env.task.mocap] = tcp + np.array([0.0, 0.0, 0.015])
    assert judge(env)
    env.data.mocap_pos[env.task.mocap] = tcp + np.array([0.0, 0.0, 0.03])
    assert not judge(env)


def test_lift():
    env = FlywheelEnv("lift")
    env.reset(seed=0)
    cube = env.task.cube
    assert not judge(env)  # resting on the table
    pos = cube.pos(env.data).copy()
    cube.place(env.data, pos + np.array([0, 0, 0.05]))
    assert not judge(env)  # not high enough
    cube.place(env.data, pos + np.array([0, 0, 0.09]))
    assert judge(env)


def test_push():
    env = FlywheelEnv("push")
    env.reset(seed=0)
    cube, goal = env.task.cube, env.task.goal
    half = env.task.half
    assert not judge(env)
    cube.place(env.data, np.array([goal[0] + 0.02, goal[1], half]))
    assert judge(env)
    cube.place(env.data, np.array([goal[0] + 0.05, goal[1], half]))
    assert not judge(env)  # too far
    cube.place(env.data, np.array([goal[0], goal[1], half + 0.06]))
    assert not judge(env)  # over the goal but lifted


def test_pick_place():
    env = FlywheelEnv("pick_place")
    env.reset(seed=0)
    cube, goal = env.task.cube, env.task.goal
    assert not judge(env)
    cube.place(env.data, goal.copy())  # resting on the platform, jaw far away
    assert judge(env)
    cube.place(env.data, goal + np.array([0, 0, 0.03]))
    assert not judge(env)  # hovering above it
    cube.place(env.data, np.array([goal[0] + 0.1, goal[1], env.task.half]))
    assert not judge(env)  # beside it on the table


def test_pick_place_needs_release():
    env = FlywheelEnv("pick_place")
    env.reset(seed=0)
    goal = env.task.goal
    env.task.cube.place(env.data, goal.copy())
    # put the jaw around the cube, closed on it
    env.data.qpos[env.ids.finger_qpos] = 0.017
    mujoco.mj_forward(env.model, env.data)
    tcp = env.data.site_xpos[env.ids.tcp].copy()
    env.task.cube.place(env.data, tcp.copy())
    env.data.mocap_pos[env.task.mocap][:2] = tcp[:2]
    env.task.goal = np.array([tcp[0], tcp[1], tcp[2]])
    assert not judge(env)  # in place, but the jaw still holds it
    env.data.qpos[env.ids.finger_qpos] = 0.04
    assert judge(env)  # same place, jaw open


def test_drawer():
    env = FlywheelEnv("drawer")
    env.reset(seed=0)
    assert not judge(env)
    env.data.qpos[env.task.qpos] = 0.05
    assert not judge(env)
    env.data.qpos[env.task.qpos] = 0.13
    assert judge(env)
