"""The controller server: robots connect over WebSocket, send observations, get actions.

    ws://HOST:PORT/      the control channel (msgpack frames, see flywheel.deploy.protocol)
    GET /healthz         200 + JSON: model, alias, uptime, connections (no token needed)
    GET /metrics         Prometheus text; needs `Authorization: Bearer TOKEN` when a token is set

Binds 127.0.0.1 unless told otherwise, and refuses to bind anywhere else without a token.
Inference runs on one worker thread, never on the event loop, so a slow model cannot stall
health checks or other robots' connections. Messages above `max_message_bytes` get an error
reply with a safe action; frames above `hard_limit_factor` times that are cut by the WebSocket
layer (the connection closes with 1009, the server goes on).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import hmac
import ipaddress
import json
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from flywheel.deploy.controller import Controller, ControllerConfig, Decision, PolicySlot
from flywheel.deploy.deployed import DeployedPolicy, load_policy
from flywheel.deploy.metrics import Metrics
from flywheel.deploy.prepare import Preparer
from flywheel.deploy.protocol import PROTOCOL, ProtocolError, decode_obs, mismatches, pack, unpack
from flywheel.deploy.runners import Backend

if TYPE_CHECKING:  # the registry imports deploy (gates); deploy needs it only to type
    from flywheel.registry.store import Registry

log = logging.getLogger("flywheel.controller.server")
MESSAGE_TYPES = frozenset({"hello", "act", "reset", "episode_end"})
"""Request types; metrics label anything else `unknown` (labels never echo client strings)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Where and how the controller server listens."""

    host: str = "127.0.0.1"
    """Address to bind; anything but loopback requires a token."""
    port: int = 8765
    """TCP port; 0 picks a free one (tests)."""
    token: str | None = None
    """Shared secret clients send in their hello; required when `host` is not loopback."""
    max_message_bytes: int = 1 << 16
    """Largest accepted message; larger ones get an error reply with a safe action."""
    hard_limit_factor: int = 4
    """Frames above this many times `max_message_bytes` are cut by the WebSocket layer."""
    max_auth_failures: int = 3
    """Wrong or missing tokens before the connection is closed."""
    alias: str | None = "production"
    """Registry alias to follow: a move of the alias is staged for the next episode."""
    watch_interval_s: float = 0.5
    """How often the registry alias is polled."""
    backend: Backend = "onnx"
    """Policy runner: onnx (onnxruntime), torchscript or eager."""
    record_episodes: bool = True
    """Report finished episodes to the registry (canary evidence, safety stops)."""
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    """Safety settings of every session."""
    switch_interval_s: float | None = 0.0005
    """Python's GIL switch interval while serving (default 5 ms): what Python work remains on
    other threads (the alias watcher, the event loop) must not hold inference up for longer than
    a fraction of a 2 ms period. Process-wide; None leaves it alone."""
    prepare_in_helper: bool = True
    """Verify and parity-check new versions (alias moves, fallbacks) in a helper process, started
    with the server, leaving only opening the checked export to the serving process (see
    flywheel.deploy.prepare); False does it all on a thread here, where the GIL it holds can
    stall inference for milliseconds."""

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"refusing to bind {self.host} without a token: anyone who can reach it could "
                "drive the robot. Pass --token (or FLYWHEEL_CONTROLLER_TOKEN), or bind 127.0.0.1."
            )
        if self.max_message_bytes < 256 or self.hard_limit_factor < 1:
            raise ValueError("max_message_bytes must be >= 256 and hard_limit_factor >= 1")


@dataclass
class _Session:
    controller: Controller | None = None
    authed: bool = False
    failures: int = 0
    close: bool = False


class ControllerServer:
    """Serves one PolicySlot to any number of robots; optionally follows a registry alias."""

    def __init__(
        self,
        slot: PolicySlot,
        config: ServerConfig | None = None,
        *,
        registry: Registry | None = None,
        preparer: Preparer | None = None,
    ) -> None:
        self.slot = slot
        self.config = cfg = config or ServerConfig()
        self.registry = registry
        self.preparer = preparer
        """Loads new versions when given (closed with the server); else load_policy here."""
        self.metrics = Metrics()
        self.pool = cf.ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.io_pool = cf.ThreadPoolExecutor(1, thread_name_prefix="registry-io")
        self.started = time.monotonic()
        self.following = slot.latest.version
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.port = cfg.port
        slot.on_event = self._on_event
        self.metrics.set("model_version", slot.latest.version or 0)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/"

    def start(self) -> ControllerServer:
        """Serve on a background thread (returns once listening)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._main(ready))
            except BaseException as e:  # surfaced to start()'s caller
                failure.append(e)
                ready.set()

        self._thread = threading.Thread(target=run, name="controller-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until stop() (or KeyboardInterrupt)."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self._main(threading.Event()))

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(10)
        self.pool.shutdown(wait=False)
        self.io_pool.shutdown(wait=False)
        if self.preparer is not None:
            self.preparer.close()

    async def _main(self, ready: threading.Event) -> None:
        cfg = self.config
        if cfg.switch_interval_s is not None:
            sys.setswitchinterval(cfg.switch_interval_s)
        self._loop = asyncio.get_running_loop()
        async with serve(
            self._handler,
            cfg.host,
            cfg.port,
            max_size=cfg.max_message_bytes * cfg.hard_limit_factor,
            compression=None,  # latency over bandwidth; observations are small and dense
            process_request=self._http,
            server_header="flywheel-controller",
        ) as server:
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            if self.registry is not None and cfg.alias is not None:
                if self.preparer is not None:
                    self.preparer.start()  # its imports take seconds; the first swap should not
                threading.Thread(target=self._watch, name="alias-watch", daemon=True).start()
            log.info("controller server on %s serving %s", self.url, self.slot.latest.name)
            ready.set()
            await server.wait_closed()

    # ------------------------------------------------------------------ HTTP endpoints

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.slot.latest.info(),
            "alias": self.config.alias,
            "following": self.following,
            "fallen_back_from": self.slot.fallen_back_from,
            "controller": asdict(self.config.controller),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "connections": int(self.metrics.gauges.get("connections", 0)),
        }

    def _http(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            resp = conn.respond(HTTPStatus.OK, json.dumps(self.health()) + "\n")
            resp.headers["Content-Type"] = "application/json"
            return resp
        if request.path == "/metrics":
            if self.config.token and not _bearer_ok(request, self.config.token):
                self.metrics.inc("errors", code="unauthorized")
                return conn.respond(HTTPStatus.UNAUTHORIZED, "token required\n")
            self.metrics.set("swaps", self.slot.swaps)
            return conn.respond(HTTPStatus.OK, self.metrics.prometheus())
        if request.path != "/":
            return conn.respond(
                HTTPStatus.NOT_FOUND, "endpoints: / (WebSocket), /healthz, /metrics\n"
            )
        return None

    # ------------------------------------------------------------------ the control channel

    async def _handler(self, ws: ServerConnection) -> None:
        sess = _Session(authed=not self.config.token)
        self._gauge_connections(+1)
        try:
            async for raw in ws:
                t_recv = time.monotonic()
                try:
                    reply = await self._handle(sess, raw, t_recv)
                except Exception as e:  # a bug or an odd message must not cost the robot its link
                    log.exception("handling a message failed")
                    reply = self._error(sess, None, "internal", f"{type(e).__name__}: {e}")
                await ws.send(pack(reply))
                self.metrics.observe("server", (time.monotonic() - t_recv) * 1e3)
                if sess.close:
                    await ws.close(1008, "unauthorized")
                    break
        except ConnectionClosed as e:
            codes = {f.code for f in (e.rcvd, e.sent) if f is not None}
            if 1009 in codes:
                self.metrics.inc("errors", code="frame_too_big")
        finally:
            self._gauge_connections(-1)

    def _gauge_connections(self, d: int) -> None:
        self.metrics.set("connections", self.metrics.gauges.get("connections", 0) + d)

    async def _handle(self, sess: _Session, raw: bytes | str, t_recv: float) -> dict[str, Any]:
        cfg = self.config
        self.metrics.inc("messages")
        if len(raw) > cfg.max_message_bytes:
            return self._error(
                sess,
                None,
                "oversize",
                f"message of {len(raw)} bytes exceeds the limit of {cfg.max_message_bytes}",
            )
        try:
            msg = unpack(raw)
        except ProtocolError as e:
            return self._error(sess, None, e.code, str(e))
        kind, seq = msg["type"], msg.get("seq")
        self.metrics.inc("requests", type=kind if kind in MESSAGE_TYPES else "unknown")
        if kind == "hello":
            return self._hello(sess, msg)
        if not sess.authed:
            sess.failures += 1
            sess.close = sess.failures >= cfg.max_auth_failures
            return self._error(
                sess, seq, "unauthorized", "send a hello with the server's token first"
            )
        if sess.controller is None:
            return self._error(sess, seq, "no_session", "send a hello first")
        loop = asyncio.get_running_loop()
        ctl = sess.controller
        if kind == "act":
            try:
                obs = decode_obs(msg.get("obs"))
                age = msg.get("obs_age", 0.0)
                if not isinstance(age, int | float) or not np.isfinite(age) or age < 0:
                    raise ProtocolError("bad_message", f"obs_age must be seconds >= 0, got {age!r}")
            except ProtocolError as e:
                return self._error(sess, seq, e.code, str(e))
            d: Decision = await loop.run_in_executor(
                self.pool, lambda: ctl.act(obs, stamp=t_recv - age)
            )
            return self._action(seq, d)
        if kind == "reset":
            policy = await loop.run_in_executor(self.pool, ctl.reset)
            return {"type": "reset_ok", "model": policy.info()}
        if kind == "episode_end":
            report = {
                **ctl.episode_report(),
                "success": bool(msg.get("success", False)),
                "client_steps": msg.get("steps"),
            }
            self.metrics.inc("episodes")
            version = ctl.policy.version
            if self.registry is not None and version is not None and cfg.record_episodes:
                await loop.run_in_executor(
                    self.io_pool, self.registry.record_episode, version, report
                )
            return {"type": "episode_ok", "report": report}
        return self._error(sess, seq, "bad_message", f"unknown message type {kind!r}")

    def _hello(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        if cfg.token:
            sent = msg.get("token")
            if not isinstance(sent, str) or not hmac.compare_digest(
                sent.encode(), cfg.token.encode()
            ):
                sess.failures += 1
                sess.close = sess.failures >= cfg.max_auth_failures
                return self._error(sess, None, "unauthorized", "missing or wrong token")
        if msg.get("protocol") != PROTOCOL:
            return self._error(
                sess,
                None,
                "handshake",
                f"protocol {msg.get('protocol')!r}; this server speaks {PROTOCOL}",
            )
        sess.authed = True
        if sess.controller is None:
            sess.controller = Controller(self.slot, cfg.controller)
        policy = sess.controller.policy
        expect = msg.get("expect") or {}
        bad = (
            mismatches(expect, policy.info())
            if isinstance(expect, dict)
            else ["expect must be a map"]
        )
        if bad:
            self.metrics.inc("errors", code="handshake")
            return self._error(sess, None, "handshake", "; ".join(bad))
        return {
            "type": "welcome",
            "protocol": PROTOCOL,
            "model": policy.info(),
            "schema": policy.schema,
            "limits": {"max_message_bytes": cfg.max_message_bytes},
            "controller": {
                "stale_periods": cfg.controller.stale_periods,
                "hold_ticks": cfg.controller.hold_ticks,
            },
        }

    def _error(self, sess: _Session, seq: Any, code: str, message: str) -> dict[str, Any]:
        """An error reply with a safe action; counts as a faulty tick for a running session."""
        self.metrics.inc("errors", code=code)
        if sess.controller is not None and code not in ("handshake",):
            d = sess.controller.fault(code, message)
            action, status = d.action, d.status
        else:
            dim = int(np.prod(self.slot.latest.schema["action"]["shape"]))
            action, status = np.zeros(dim, np.float32), "hold"
        return {
            "type": "error",
            "seq": seq,
            "code": code,
            "message": message,
            "action": action.tolist(),
            "status": status,
        }

    def _action(self, seq: Any, d: Decision) -> dict[str, Any]:
        self.metrics.inc("actions", status=d.status)
        if d.inference_ms:
            self.metrics.observe("inference", d.inference_ms)
        if d.code is not None:
            self.metrics.inc("errors", code=d.code)
            return {
                "type": "error",
                "seq": seq,
                "code": d.code,
                "message": d.message,
                "action": d.action.tolist(),
                "status": d.status,
                "version": d.version,
            }
        return {
            "type": "action",
            "seq": seq,
            "action": d.action.tolist(),
            "status": d.status,
            "version": d.version,
            "inference_ms": round(d.inference_ms, 4),
        }

    # ------------------------------------------------------------------ registry following

    def _on_event(self, kind: str, doc: dict[str, Any]) -> None:
        self.metrics.inc("events", kind=kind)
        if kind == "staged":
            self.metrics.set("model_version", self.slot.latest.version or 0)
        if kind in ("fallback", "fallback_failed") and self.registry is not None:
            try:
                self.registry.log(
                    op=f"controller_{kind}", why=f"controller server {self.url}", **doc
                )
            except OSError as e:
                log.error("could not log %s to the registry: %s", kind, e)

    def load_version(self, ref: str | int) -> DeployedPolicy:
        """A version of the registry, loaded off the control path (in the helper if there is one)."""
        assert self.registry is not None
        if self.preparer is not None:
            return self.preparer.load(ref, registry=self.registry, backend=self.config.backend)
        return load_policy(ref, registry=self.registry, backend=self.config.backend)

    def _watch(self) -> None:
        """Poll the followed alias; load a moved-to version off the control path and stage it."""
        assert self.registry is not None and self.config.alias is not None
        while not self._stop.wait(self.config.watch_interval_s):
            try:
                target = self.registry.aliases().get(self.config.alias)
            except (OSError, ValueError) as e:
                log.error("reading aliases: %s", e)
                continue
            if target is None or target == self.following:
                continue
            try:
                policy = self.load_version(target)
                self.slot.stage(policy, reason=f"{self.config.alias} moved to v{target}")
                self.slot.fallen_back_from = None
            except Exception as e:  # a bad or incompatible version must not take the server down
                log.error("not staging v%s: %s", target, e)
                self.metrics.inc("errors", code="stage_failed")
            self.following = target


def _bearer_ok(request: Request, token: str) -> bool:
    got = request.headers.get("Authorization", "")
    return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())


def serve_registry(registry: Registry, config: ServerConfig) -> ControllerServer:
    """A server for `config.alias` of `registry`, falling back to `previous` after stops.

    The first version is loaded here, before anything is served; later ones off the control
    path (see `ServerConfig.prepare_in_helper`)."""
    alias = config.alias or "production"
    policy: DeployedPolicy = load_policy(alias, registry=registry, backend=config.backend)
    helper = config.prepare_in_helper and config.backend != "eager"
    server = ControllerServer(
        PolicySlot(policy, fallback_after=config.controller.fallback_after),
        config,
        registry=registry,
        preparer=Preparer() if helper else None,
    )

    def previous() -> DeployedPolicy | None:
        prev = registry.aliases().get("previous")
        return None if prev is None else server.load_version(prev)

    server.slot.fallback = previous
    return server
