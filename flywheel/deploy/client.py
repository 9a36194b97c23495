"""The robot side of the controller protocol: connect, check the handshake, get actions in time.

A client refuses to run (HandshakeError) when the server's model differs from what the robot
expects: a pinned model version, schema hash or normaliser hash, the robot's control rate, the
action chunk length it executes, or observation keys/shapes/dtypes and action shape that the
robot does not have. It checks again after every reset, since the server swaps models between
episodes. A reply that does not arrive within `reply_timeout_periods` control periods is a fault
for the client's own watchdog: hold the last action, then stop.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flywheel.deploy.protocol import PROTOCOL, encode_obs, mismatches, pack, unpack
from flywheel.deploy.watchdog import Watchdog
from flywheel.deploy.wire import Wire, WireClosed


class HandshakeError(Exception):
    """The server's model is not the one this robot may run; the client refuses to start."""


class ServerError(Exception):
    """The server refused the session (wrong token, protocol) or went away."""


@dataclass(frozen=True, kw_only=True)
class RobotSpec:
    """What the robot has: observation keys (shape, dtype), action shape and control rate."""

    observation: dict[str, tuple[tuple[int, ...], str]]
    """Observation key -> (shape, dtype name) the robot provides."""
    action_shape: tuple[int, ...]
    """Shape of the action the robot applies."""
    control_hz: float | None = None
    """The robot's control rate, if it has a fixed one."""

    @classmethod
    def from_env(cls, env: Any) -> RobotSpec:
        """From a Gymnasium env with Dict (or Box) observations."""
        space = env.observation_space
        spaces = getattr(space, "spaces", {"state": space})
        obs = {k: (tuple(s.shape), np.dtype(s.dtype).name) for k, s in spaces.items()}
        hz = env.metadata.get("render_fps")
        return cls(
            observation=obs,
            action_shape=tuple(env.action_space.shape),
            control_hz=float(hz) if hz else None,
        )

    def problems(self, schema: Mapping[str, Any]) -> list[str]:
        """Why a model with this schema cannot run on this robot (empty if it can)."""
        out = []
        for k, v in schema["observation"].items():
            have = self.observation.get(k)
            want = (tuple(v["shape"]), np.dtype(v["dtype"]).name)
            if have is None:
                out.append(
                    f"model needs observation {k!r}, the robot has {sorted(self.observation)}"
                )
            elif have != want:
                out.append(f"observation {k!r}: model wants {want}, the robot gives {have}")
        if tuple(schema["action"]["shape"]) != self.action_shape:
            out.append(
                f"action shape: model {tuple(schema['action']['shape'])}, robot {self.action_shape}"
            )
        return out


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """How a robot connects and what it insists on."""

    url: str
    """ws://host:port/ of the controller server."""
    token: str | None = None
    """The server's token, if it has one."""
    expect_version: str | None = None
    """Refuse any model but this one (e.g. "v3"); None accepts what the server runs."""
    expect_schema_hash: str | None = None
    """Refuse a model with another observation/action schema."""
    expect_normalizer_hash: str | None = None
    """Refuse a model with another normaliser."""
    control_hz: float | None = None
    """The robot's control rate; default: the robot spec's. The server's must be equal."""
    chunk_len: int = 1
    """Actions per reply the robot executes; the server's must be equal."""
    reply_timeout_periods: float = 1.0
    """A reply later than this many control periods is a fault (hold, then stop)."""
    hold_ticks: int = 2
    """Missing replies in a row during which the last action is held."""
    stop_action: tuple[float | None, ...] | None = None
    """Action on a client-side safety stop (None entries hold that dimension)."""
    open_timeout_s: float = 5.0
    """Connection and handshake timeout."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"server URL {self.url!r} must start with ws:// or wss://")


@dataclass(frozen=True)
class Step:
    """One action the robot should apply, and where it came from."""

    action: np.ndarray
    status: str
    """ok, hold or stopped."""
    version: str | None
    code: str | None = None
    """Error code (the server's, or `timeout` from the client's own watchdog)."""
    message: str | None = None
    rtt_ms: float = 0.0


class RobotClient:
    """A synchronous client: one request in flight, as a control loop needs."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.ws: Wire | None = None
        self.model: dict[str, Any] = {}
        self.schema: dict[str, Any] = {}
        self.keys: tuple[str, ...] = ()
        self.seq = 0
        self.period = 0.05
        self.watchdog: Watchdog | None = None
        self.robot: RobotSpec | None = None
        self.expect: dict[str, Any] = {}

    def __enter__(self) -> RobotClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, robot: RobotSpec | None = None) -> dict[str, Any]:
        """Open the connection and handshake; HandshakeError (connection closed) on mismatch."""
        cfg = self.config
        self.robot = robot
        try:
            self.ws = Wire(cfg.url, timeout=cfg.open_timeout_s)
        except (OSError, WireClosed) as e:
            raise ServerError(f"{cfg.url}: cannot connect ({e})") from None
        hz = cfg.control_hz or (robot.control_hz if robot else None)
        self.expect = {
            "model_version": cfg.expect_version,
            "schema_hash": cfg.expect_schema_hash,
            "normalizer_hash": cfg.expect_normalizer_hash,
            "control_hz": hz,
            "chunk_len": cfg.chunk_len,
        }
        reply = self._request(
            {"type": "hello", "protocol": PROTOCOL, "token": cfg.token, "expect": self.expect},
            want="welcome",
        )
        self.schema = reply["schema"]
        self.keys = tuple(self.schema["observation"])
        self._accept(reply["model"])
        dim = int(np.prod(self.schema["action"]["shape"]))
        self.watchdog = Watchdog(dim, hold_ticks=cfg.hold_ticks, stop_action=cfg.stop_action)
        return self.model

    def _accept(self, model: dict[str, Any]) -> None:
        """Check a model announcement (welcome or reset) against every expectation."""
        bad = mismatches(self.expect, model)
        if self.model and model["schema_hash"] != self.model["schema_hash"]:
            bad.append(
                f"schema_hash changed from {self.model['schema_hash']} to {model['schema_hash']}"
            )
        if self.robot is not None:
            bad += self.robot.problems(self.schema)
        if bad:
            self.close()
            raise HandshakeError(
                f"{self.config.url}: refusing to run {model.get('model_version')}: "
                + "; ".join(bad)
            )
        self.model = model
        self.period = 1.0 / float(model["control_hz"])

    def reset(self) -> dict[str, Any]:
        """Start an episode; the server may have swapped models, so the handshake is re-checked."""
        reply = self._request({"type": "reset"}, want="reset_ok")
        self._accept(reply["model"])
        assert self.watchdog is not None
        self.watchdog.reset()
        return self.model

    def act(self, obs: Mapping[str, np.ndarray], *, age: float = 0.0) -> Step:
        """Send an observation (`age`: seconds since it was taken), get the action to apply."""
        assert self.ws is not None and self.watchdog is not None, "connect() first"
        self.seq += 1
        seq = self.seq
        t0 = time.perf_counter()
        self.ws.send(
            pack(
                {
                    "type": "act",
                    "seq": seq,
                    "obs_age": float(age),
                    "obs": encode_obs({k: obs[k] for k in self.keys}),
                }
            )
        )
        deadline = t0 + self.config.reply_timeout_periods * self.period
        while True:
            left = deadline - time.perf_counter()
            try:
                if left <= 0:
                    raise TimeoutError
                raw = self.ws.recv(left)
            except TimeoutError:
                action, status = self.watchdog.fault("timeout")
                return Step(
                    action,
                    status,
                    self.model.get("model_version"),
                    "timeout",
                    f"no reply within {self.config.reply_timeout_periods:g} periods",
                )
            except WireClosed as e:
                raise ServerError(f"{self.config.url}: connection closed ({e})") from None
            msg = unpack(raw)
            if msg.get("seq") not in (seq, None):  # None: the server could not read the request
                continue  # a late reply to a request the watchdog already gave up on
            rtt = (time.perf_counter() - t0) * 1e3
            action = np.asarray(msg["action"], np.float32)
            if msg["type"] == "action":
                self.watchdog.ok(action)
                return Step(action, msg["status"], msg.get("version"), rtt_ms=rtt)
            return Step(
                action, msg["status"], msg.get("version"), msg.get("code"), msg.get("message"), rtt
            )

    def end_episode(self, *, success: bool, steps: int) -> dict[str, Any]:
        return self._request(
            {"type": "episode_end", "success": success, "steps": steps}, want="episode_ok"
        )["report"]

    def _request(self, msg: dict[str, Any], *, want: str) -> dict[str, Any]:
        assert self.ws is not None
        self.ws.send(pack(msg))
        deadline = time.monotonic() + self.config.open_timeout_s
        while True:
            try:
                reply = unpack(self.ws.recv(max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                raise ServerError(
                    f"{self.config.url}: no {want} reply within {self.config.open_timeout_s:g} s"
                ) from None
            except WireClosed as e:
                raise ServerError(f"{self.config.url}: connection closed ({e})") from None
            if reply["type"] == want:
                return reply
            if reply["type"] == "error" and reply.get("seq") is None:
                self.close()
                if reply["code"] == "handshake":
                    raise HandshakeError(f"{self.config.url}: refusing to run: {reply['message']}")
                raise ServerError(f"{self.config.url}: {reply['code']}: {reply['message']}")
            # anything else is a late reply to an abandoned act: skip it

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
