"""A sim robot drives `reach` through the controller server, as a real robot would."""

from __future__ import annotations

import numpy as np

from flywheel.deploy.client import ClientConfig, RobotClient
from flywheel.deploy.robot import run_episodes
from flywheel.deploy.server import ServerConfig, serve_registry
from flywheel.policies import NumpyPolicy
from tests.deploy.conftest import make_env


def test_sim_client_completes_episodes_through_the_server(registry, reach_policies):
    registry.register(reach_policies["good"])
    registry.move({"production": 1}, op="test", why="setup")
    srv = serve_registry(registry, ServerConfig(port=0)).start()
    try:
        with RobotClient(ClientConfig(url=srv.url)) as client:
            results = run_episodes(client, lambda: make_env("reach", "none"), episodes=4, seed=0)
    finally:
        srv.stop()
    assert len(results) == 4
    for r in results:
        assert not r.safety_stop and r.statuses == {"ok": r.steps} and r.versions == ["v1"]
        assert r.end in ("terminated", "truncated") and (r.end == "truncated" or r.success)
    assert sum(r.success for r in results) >= 2  # the BC policy reaches the goal through the wire
    reports = registry.episodes(1)
    assert [e["client_steps"] for e in reports] == [r.steps for r in results]
    assert all(e["steps"] == e["client_steps"] and e["safety_stops"] == 0 for e in reports)


def test_actions_over_the_wire_match_the_policy(registry, reach_policies):
    registry.register(reach_policies["good"])
    registry.move({"production": 1}, op="test", why="setup")
    srv = serve_registry(registry, ServerConfig(port=0)).start()
    env = make_env("reach", "none")
    try:
        policy = NumpyPolicy(registry.load(1).actor)
        with RobotClient(ClientConfig(url=srv.url)) as client:
            client.connect()
            client.reset()
            obs, _ = env.reset(seed=3)
            step = client.act(obs)  # first tick: clipped to limits only, no rate limit yet
            np.testing.assert_allclose(step.action, policy.single(obs), atol=1e-5)
    finally:
        env.close()
        srv.stop()
