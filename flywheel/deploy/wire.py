"""A WebSocket connection on one blocking socket, for control loops (no background thread).

websockets' own sync client reads on a background thread and hands messages over through a
queue: every reply then costs two thread wake-ups. A robot's loop sends one request and waits
for its reply, so here the caller's thread reads the socket itself (websockets' Sans-I/O
protocol does the framing, pings and closing handshake). No proxy is ever used: the URL's host
is the only address connected to.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from collections import deque

from websockets.client import ClientProtocol
from websockets.frames import OP_BINARY, OP_CONT, OP_TEXT
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri


class WireClosed(Exception):
    """The connection is closed (by the server, the network, or us)."""


class Wire:
    """send(bytes) / recv(timeout) -> bytes | str over ws:// or wss://."""

    def __init__(self, url: str, *, timeout: float, user_agent: str = "flywheel-robot") -> None:
        uri = parse_uri(url)
        deadline = time.monotonic() + timeout
        sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if uri.secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=uri.host)
        sock.setblocking(True)
        self.sock = sock
        self.proto = ClientProtocol(uri, max_size=None)
        self.messages: deque[bytes | str] = deque()
        self._parts: list[bytes] = []
        self._text = False
        request = self.proto.connect()
        request.headers["User-Agent"] = user_agent
        self.proto.send_request(request)
        self._flush()
        while self.proto.state is State.CONNECTING:
            self._read(max(0.0, deadline - time.monotonic()))
        if self.proto.handshake_exc is not None:
            self.close()
            raise WireClosed(f"{url}: WebSocket handshake failed ({self.proto.handshake_exc})")

    def send(self, data: bytes) -> None:
        if self.proto.state is not State.OPEN:
            raise WireClosed(self._why())
        self.proto.send_binary(data)
        self._flush()

    def recv(self, timeout: float | None) -> bytes | str:
        """The next message; TimeoutError if none within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.messages:
            if self.proto.state is State.CLOSED:
                raise WireClosed(self._why())
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._read(left)
        return self.messages.popleft()

    def _read(self, timeout: float | None) -> None:
        if not isinstance(self.sock, ssl.SSLSocket) or not self.sock.pending():
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                raise TimeoutError
        try:
            data = self.sock.recv(1 << 16)
        except OSError as e:
            self.proto.receive_eof()
            raise WireClosed(f"connection lost ({e})") from None
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()
        for event in self.proto.events_received():
            if isinstance(event, Response):
                continue
            if event.opcode in (OP_BINARY, OP_TEXT):
                self._text = event.opcode == OP_TEXT
                self._parts = [bytes(event.data)]
            elif event.opcode == OP_CONT:
                self._parts.append(bytes(event.data))
            else:
                continue  # ping/pong/close: the protocol answers them itself
            if event.fin:
                payload = b"".join(self._parts)
                self.messages.append(payload.decode() if self._text else payload)
        self._flush()

    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                self.sock.sendall(chunk)
            else:  # the protocol asks for the TCP connection to be half-closed
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_WR)

    def _why(self) -> str:
        exc = self.proto.close_exc
        return f"connection closed ({exc})"

    def close(self) -> None:
        try:
            if self.proto.state is State.OPEN:
                self.proto.send_close()
                self._flush()
        except OSError:
            pass
        finally:
            self.sock.close()
