"""Controller server: auth, size caps, bad observations (safe action + error, server lives on),
handshake refusals, health and metrics, inference off the event loop, hot swap by alias."""

from __future__ import annotations

import http.client
import json
import threading
import time

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from flywheel.deploy.client import ClientConfig, HandshakeError, RobotClient, RobotSpec
from flywheel.deploy.controller import ControllerConfig, PolicySlot
from flywheel.deploy.protocol import PROTOCOL, encode_obs, pack, unpack
from flywheel.deploy.server import ControllerServer, ServerConfig, serve_registry
from tests.deploy.conftest import slow_policy, toy_bundle, toy_obs, toy_policy

TOKEN = "s3cret-token"


@pytest.fixture
def server(tmp_path):
    slot = PolicySlot(toy_policy(tmp_path / "p"))
    cfg = ServerConfig(port=0, token=TOKEN, alias=None, max_message_bytes=4096)
    srv = ControllerServer(slot, cfg).start()
    yield srv
    srv.stop()


def ws(srv):
    return connect(srv.url, proxy=None, compression=None, max_size=None, open_timeout=5)


def call(conn, msg):
    conn.send(pack(msg) if isinstance(msg, dict) else msg)
    return unpack(conn.recv(timeout=5))


def hello(conn, token=TOKEN, **expect):
    return call(conn, {"type": "hello", "protocol": PROTOCOL, "token": token, "expect": expect})


def act(conn, obs, seq=1):
    return call(conn, {"type": "act", "seq": seq, "obs_age": 0.0, "obs": encode_obs(obs)})


def http_get(srv, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)  # no proxy, loopback only
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    return r.status, r.read().decode()


def assert_safe(reply, code):
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert reply["status"] in ("hold", "stopped") and len(reply["action"]) == 2
    assert all(np.isfinite(reply["action"]))


def assert_alive(srv):
    status, body = http_get(srv, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    with ws(srv) as c:
        assert hello(c)["type"] == "welcome"
        assert act(c, toy_obs())["type"] == "action"


def test_requests_without_the_token_are_refused(server):
    with ws(server) as c:
        assert_safe(act(c, toy_obs()), "unauthorized")  # no hello at all
        assert_safe(hello(c, token=None), "unauthorized")
        assert_safe(hello(c, token="wrong"), "unauthorized")
        with pytest.raises(ConnectionClosed):  # third failure: the server hangs up
            c.recv(timeout=5)
    assert server.metrics.count("errors", code="unauthorized") == 3
    assert_alive(server)


def test_binding_beyond_loopback_needs_a_token():
    with pytest.raises(ValueError, match=r"refusing to bind 0\.0\.0\.0 without a token"):
        ServerConfig(host="0.0.0.0")
    assert ServerConfig(host="0.0.0.0", token="t").host == "0.0.0.0"
    assert ServerConfig().host == "127.0.0.1"


def test_oversized_messages_get_a_safe_action_and_the_connection_stays(server):
    with ws(server) as c:
        hello(c)
        big = {
            "a": np.zeros(3, np.float32),
            "b": np.zeros(2, np.float32),
            "pad": np.zeros(2000, np.float32),
        }
        assert_safe(act(c, big), "oversize")
        assert act(c, toy_obs(), seq=2)["type"] == "action"  # same connection, still serving
    with ws(server) as c:  # far beyond the cap: the WebSocket layer cuts the frame
        hello(c)
        c.send(b"\x00" * (4096 * 4 + 10))
        with pytest.raises(ConnectionClosed) as e:
            c.recv(timeout=5)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1009
    assert_alive(server)


@pytest.mark.parametrize(
    ("obs", "code"),
    [
        ({"a": np.zeros(3, np.float32)}, "schema"),
        ({"a": np.zeros(4, np.float32), "b": np.zeros(2, np.float32)}, "schema"),
        ({"a": np.zeros(3, np.float64), "b": np.zeros(2, np.float32)}, "schema"),
        ({"a": np.array([0, np.nan, 0], np.float32), "b": np.zeros(2, np.float32)}, "nonfinite"),
    ],
)
def test_wrong_schema_and_nan_observations_get_a_safe_action(server, obs, code):
    with ws(server) as c:
        hello(c)
        good = act(c, toy_obs())
        reply = act(c, obs, seq=2)
        assert_safe(reply, code)
        assert reply["seq"] == 2 and reply["action"] == good["action"]  # held
        assert act(c, toy_obs(), seq=3)["type"] == "action"
    assert server.metrics.count("errors", code=code) == 1
    assert_alive(server)


def test_malformed_messages_are_answered_not_fatal(server):
    with ws(server) as c:
        hello(c)
        assert_safe(call(c, b"\xc1\xff garbage"), "bad_message")
        assert_safe(call(c, "text frame"), "bad_message")
        assert_safe(
            call(
                c,
                pack(
                    {
                        "type": "act",
                        "seq": 1,
                        "obs": {"a": {"dtype": "object", "shape": [1], "data": b"x"}},
                    }
                ),
            ),
            "schema",
        )
        assert_safe(
            call(
                c,
                pack(
                    {
                        "type": "act",
                        "seq": 1,
                        "obs": {"a": {"dtype": "float32", "shape": [3], "data": b"x"}},
                    }
                ),
            ),
            "schema",
        )
        reply = call(c, pack({"type": "act", "seq": 1, "obs": encode_obs(toy_obs())}))
        assert reply["type"] == "error" and reply["status"] == "stopped"  # 4 faults: latched stop
        assert call(c, {"type": "reset"})["type"] == "reset_ok"
        assert act(c, toy_obs())["type"] == "action"
    assert_alive(server)


def test_healthz_and_metrics(server):
    with ws(server) as c:
        hello(c)
        act(c, toy_obs())
        act(c, {"a": np.zeros(1, np.float32)})
    status, body = http_get(server, "/healthz")
    doc = json.loads(body)
    assert status == 200 and doc["model"]["schema_hash"].startswith("sha256:")
    assert doc["model"]["control_hz"] == 50.0 and doc["model"]["chunk_len"] == 1
    assert http_get(server, "/metrics")[0] == 401
    status, text = http_get(server, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert 'flywheel_controller_actions_total{status="ok"} 1' in text
    assert 'flywheel_controller_errors_total{code="schema"} 1' in text
    assert 'flywheel_controller_inference_ms{quantile="0.99"}' in text
    assert http_get(server, "/nope")[0] == 404


def test_client_refuses_a_mismatched_handshake(server, tmp_path):
    spec = RobotSpec(
        observation={"a": ((3,), "float32"), "b": ((2,), "float32")},
        action_shape=(2,),
        control_hz=50.0,
    )
    base = dict(url=server.url, token=TOKEN)
    with RobotClient(ClientConfig(**base)) as c:
        model = c.connect(spec)
        assert model["model_version"] == server.slot.latest.name
    for cfg, fragment in [
        (ClientConfig(**base, expect_version="v99"), "model_version"),
        (ClientConfig(**base, expect_schema_hash="sha256:00"), "schema_hash"),
        (ClientConfig(**base, expect_normalizer_hash="sha256:00"), "normalizer_hash"),
        (ClientConfig(**base, control_hz=20.0), "control_hz"),
        (ClientConfig(**base, chunk_len=8), "chunk_len"),
    ]:
        with pytest.raises(HandshakeError, match=fragment):
            RobotClient(cfg).connect(spec)
    robot = RobotSpec(observation={"a": ((3,), "float32")}, action_shape=(2,), control_hz=50.0)
    with pytest.raises(HandshakeError, match="model needs observation 'b'"):
        RobotClient(ClientConfig(**base)).connect(robot)
    assert_alive(server)


def test_client_checks_the_handshake_itself(server, monkeypatch):
    import flywheel.deploy.server as server_mod

    monkeypatch.setattr(server_mod, "mismatches", lambda expect, model: [])  # a lax server
    with pytest.raises(
        HandshakeError, match=r"refusing to run p: model_version: server has .p., expected .v99."
    ):
        RobotClient(ClientConfig(url=server.url, token=TOKEN, expect_version="v99")).connect()


def test_inference_runs_off_the_event_loop_and_late_replies_trip_the_client_watchdog(tmp_path):
    p = toy_policy(tmp_path / "p")

    busy = threading.Event()  # inference blocks until the test sets it: no clock to race
    slow = slow_policy(p, 0.0, gate=busy)
    cfg = ServerConfig(port=0, alias=None, controller=ControllerConfig(deadline_periods=100))
    srv = ControllerServer(PolicySlot(slow), cfg).start()
    try:
        client = RobotClient(ClientConfig(url=srv.url, hold_ticks=1))
        client.connect()
        client.reset()
        s1 = client.act(toy_obs())  # returns although the inference cannot finish yet
        assert s1.code == "timeout" and s1.status == "hold"
        # answered while the inference is blocked; a loop running the inference itself would
        # never answer (the gate opens only below), and http_get gives up after 5 s
        status, _ = http_get(srv, "/healthz")
        assert status == 200
        s2 = client.act(toy_obs())
        assert s2.status == "stopped" and s2.code == "timeout"
        client.close()
    finally:
        busy.set()
        srv.stop()


def test_server_follows_the_alias_between_episodes_and_falls_back(tmp_path, registry):
    registry.register(toy_bundle(tmp_path / "v1", seed=1))
    registry.register(toy_bundle(tmp_path / "v2", seed=2))
    registry.move({"production": 1}, op="test", why="setup")
    cfg = ServerConfig(
        port=0,
        watch_interval_s=0.05,
        backend="onnx",
        controller=ControllerConfig(hold_ticks=0, fallback_after=2),
    )
    srv = serve_registry(registry, cfg).start()
    try:
        client = RobotClient(ClientConfig(url=srv.url))
        assert client.connect()["model_version"] == "v1"
        client.reset()
        assert client.act(toy_obs()).version == "v1"
        registry.move({"production": 2, "previous": 1}, op="promote", why="test")
        deadline = (
            time.monotonic() + 60
        )  # the first load starts the helper process: slow on a busy machine
        while srv.slot.latest.version != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.slot.latest.version == 2
        assert srv.slot.latest.bundle is None  # verified and parity-checked in the helper
        assert client.act(toy_obs()).version == "v1"  # mid-episode: unchanged
        assert client.reset()["model_version"] == "v2"
        assert client.act(toy_obs()).version == "v2"
        for _ in range(2):  # v2 keeps getting stopped (stale observations)
            assert client.act(toy_obs(), age=1.0).status == "stopped"
            client.end_episode(success=False, steps=1)
            client.reset()
        deadline = time.monotonic() + 60
        while srv.slot.latest.version != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.reset()["model_version"] == "v1"
        assert [e["safety_stops"] for e in registry.episodes(2)] == [1, 1]
        ops = [e["op"] for e in registry.audit_entries()]
        assert "controller_fallback" in ops and registry.aliases()["production"] == 2
        client.close()
    finally:
        srv.stop()
