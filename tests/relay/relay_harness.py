"""Harness for the relay tests: the real `wgmesh-relay` as a subprocess, an in-process RelayServer on its own
thread, and a blocking synthetic node that speaks the wire protocol with wgmesh.relay.protocol.

Every relay process started here is stopped by PID (SIGTERM, then SIGKILL), whether the test passed or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from wgmesh.lab.wait import wait_until
from wgmesh.pins import Pin
from wgmesh.relay import protocol as p
from wgmesh.relay.identity import pinned_client_context, refusal
from wgmesh.relay.server import RelayConfig, RelayServer, RelayStats
from wgmesh.relay.tickets import generate_signing_key, issue_ticket, public_key_of

RELAY_BIN = str(Path(sys.executable).with_name("wgmesh-relay"))
START_DEADLINE = 10.0
HELLO_TIMEOUT = 0.5
"""The module relays' hello deadline (short, so the timeout test is quick)."""
T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Keys:
    """A coordinator signing key and its public half; `ticket()` issues like the coordinator would."""

    private: str = field(default_factory=generate_signing_key)

    @property
    def public(self) -> str:
        return public_key_of(self.private)

    def ticket(
        self,
        node_id: int,
        ttl: float = 3600,
        *,
        now: float | None = None,
        relays: Sequence[str] | None = None,
    ) -> str:
        """Like the coordinator: for `relays` by id; without, an unnamed ticket (issued before issue 16)."""
        return issue_ticket(self.private, node_id, ttl, time.time() if now is None else now, relays=relays)


@dataclass
class RelayProcess:
    """One `wgmesh-relay` process on 127.0.0.1 with a free port; its stderr goes to `log`.

    It serves TLS with its own key (kept in `relay-state` next to the log) unless `args` ask for plain
    TCP or a certificate; `pin` is that key's pin, as its listening line reports it.
    """

    log: Path
    args: Sequence[str]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    pin: str | None = None

    @property
    def state_dir(self) -> Path:
        return self.log.parent / "relay-state"

    @property
    def url(self) -> str:
        return f"{'tcp' if '--plain-tcp' in self.args else 'tls'}://127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        own_key = "--plain-tcp" not in self.args and "--tls-cert" not in self.args
        state = ["--state-dir", str(self.state_dir)] if own_key else []
        return [RELAY_BIN, "--listen", f"127.0.0.1:{self.port}", *state, *self.args]

    def start(self) -> None:
        """Start and wait for its `listening` line; retried when the port was taken meanwhile."""
        for attempt in range(3):
            self.port = free_port()
            self.log.write_text("")
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen(
                    self._argv(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                wait_until(self._listening, START_DEADLINE, "the relay's listening line")
                found = re.search(r"event=listening .*\bpin=(sha256:[0-9a-f]{64})", self.log.read_text())
                self.pin = found.group(1) if found else None
                return
            except ProcessLookupError:
                self.proc = None
                if attempt == 2 or "in use" not in self.log.read_text():
                    raise AssertionError(f"relay exited:\n{self.log.read_text()}") from None
            except BaseException:
                self.stop()
                raise

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ProcessLookupError
        return "event=listening" in self.log.read_text()

    def stop(self) -> int | None:
        """SIGTERM by PID, then SIGKILL if it lingers; returns the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return proc.returncode

    def text(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def relay_process(log: Path, *args: str) -> Iterator[RelayProcess]:
    relay = RelayProcess(log, args)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


class InProcessRelay:
    """A RelayServer on a uvloop loop in a background thread, so blocking test clients can talk to it."""

    def __init__(self, config: RelayConfig) -> None:
        self.loop = uvloop.new_event_loop()
        self.server = RelayServer(config)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.server.start())
        self.port = self.server.port
        self.pin = str(config.identity.pin) if config.identity is not None else None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stats(self) -> RelayStats:
        async def snapshot() -> RelayStats:
            return self.server.stats()

        return self.call(snapshot())

    def close(self) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


class Closed(AssertionError):
    """The relay closed the connection without a close frame."""


class Node:
    """A blocking synthetic node: one TCP (or TLS) connection to the relay.

    Given a relay with a pin (and no `tls` context of the test's own), it connects over TLS and checks the
    relay's key against the pin, as the agent's shim does; given a bare port, plain TCP.
    """

    def __init__(
        self,
        relay: RelayProcess | InProcessRelay | int,
        *,
        tls: ssl.SSLContext | None = None,
        rcvbuf: int | None = None,
        source: str | None = None,
    ) -> None:
        port = relay if isinstance(relay, int) else relay.port
        pin = None if isinstance(relay, int) or tls is not None else relay.pin
        if pin is not None:
            tls = pinned_client_context()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set before connecting so the window is small from the start (a slow receiver).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            # Another loopback address: a second client address to the relay's per-source caps.
            sock.bind((source, 0))
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
        if pin is not None:
            assert isinstance(self.sock, ssl.SSLSocket)
            assert refusal(self.sock.getpeercert(binary_form=True), Pin.parse(pin)) is None
        self.decoder = p.FrameDecoder()
        self.frames: deque[p.Frame] = deque()

    def send(self, *frames: p.Frame) -> None:
        self.sock.sendall(p.encode_many(frames))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = 5) -> p.Frame:
        """The next frame; Closed on end of stream."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame from the relay")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(256 * 1024)
            except (ConnectionResetError, ssl.SSLError) as error:
                raise Closed(f"connection reset: {error}") from None
            if not chunk:
                raise Closed("relay closed the connection")
            self.frames.extend(self.decoder.feed(chunk))
        return self.frames.popleft()

    def hello(self, node_id: int, ticket: str) -> p.HelloOk:
        self.send(p.Hello(node_id=node_id, ticket=ticket))
        frame = self.recv()
        assert isinstance(frame, p.HelloOk), frame
        return frame

    def expect_close(self, code: int, timeout: float = 5) -> p.Close:
        """Skip frames until a close, check its code, then check the stream ends."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(frame, p.Close):
                break
        assert frame.code == code, f"expected close {p.CloseCode(code).name}, got {frame}"
        with contextlib.suppress(Closed, TimeoutError):
            extra = self.recv(timeout=2)
            raise AssertionError(f"frame after close: {extra}")
        return frame

    def data(self, timeout: float = 5) -> p.Data:
        frame = self.recv(timeout)
        assert isinstance(frame, p.Data), frame
        return frame

    def alive(self) -> bool:
        """True if the relay still answers a ping on this connection."""
        self.send(p.Ping(0xABCDEF))
        while True:
            frame = self.recv()
            if isinstance(frame, p.Pong):
                return frame.token == 0xABCDEF

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@contextlib.contextmanager
def nodes(relay: RelayProcess | InProcessRelay | int, count: int, **kw: Any) -> Iterator[list[Node]]:
    made = [Node(relay, **kw) for _ in range(count)]
    try:
        yield made
    finally:
        for node in made:
            node.close()
