"""The relay: authenticates nodes by ticket and forwards Data frames between their connections.

One asyncio server (uvloop in `wgmesh-relay`, any loop when embedded). Each connection reads into its own
buffer, rewrites the 4-byte peer id of every Data frame in place to the sender's id, and hands each
receiver the frames of one read with one write. A receiver whose send queue is full costs its own drops,
never the sender's reading; a connection whose own replies (pong, hello-ok) no longer fit its queue is not
reading and is dropped. Connections, unauthenticated ones per source address and buffered bytes are capped
(docs/relay-protocol.md, "Backpressure and limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from wgmesh import logs
from wgmesh.errors import ValidationError, WgmeshError
from wgmesh.models import RevokedTicket
from wgmesh.relay.identity import RelayIdentity, server_context
from wgmesh.relay.protocol import (
    MAX_MESSAGE,
    MAX_PAYLOAD,
    VERSION,
    Close,
    CloseCode,
    Frame,
    FrameScanner,
    Hello,
    HelloOk,
    Ping,
    Pong,
    ProtocolError,
    close_code_name,
    encode,
    parse_payload,
    peer_id_field,
)
from wgmesh.relay.revocation import RevocationPuller, Revocations
from wgmesh.relay.tickets import (
    TicketError,
    TicketExpiredError,
    TicketRevokedError,
    TicketWrongNodeError,
    load_public_key,
    ticket_fingerprint,
    verify_ticket,
)

log = logging.getLogger("wgmesh.relay")

DEFAULT_PORT = 8443
DEFAULT_MAX_PAYLOAD = 9216
"""Frame payload limit: a jumbo-MTU (9,000) WireGuard datagram plus its 32-byte overhead and the peer id fit."""
DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS = 8192
DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE = 16
DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024 * 1024
DEFAULT_HELLO_TIMEOUT = 5.0
"""Seconds a connection has for its TLS handshake and hello: a node sends its hello at once."""
UNAUTHENTICATED_SHARE = 2
"""Unauthenticated connections may hold at most 1/this of the connection cap, so idle connections from
anywhere never take the slots (and descriptors) of nodes that authenticated."""
READ_BUFFER = 256 * 1024
"""Bytes read per call: ~180 datagrams of 1,400 bytes per read at full load, so per-read costs amortise."""
HELLO_BUFFER = 2048
"""The read buffer before a hello is accepted: the largest frame allowed then (a close) fits, and 2,000
idle connections cost 4 MB rather than 500 MB of read buffers."""
CONTROL_BURST = 256
"""Control frames (pings, mostly) one read may carry before the connection yields the loop: answering a
256 KiB read of pings takes ~100 ms, and the loop reads a busy socket up to 32 times in a row."""
RECOUNT_INTERVAL = 0.01
"""Seconds between exact recounts of the buffered bytes when the running estimate says the cap is hit."""
CLOSE_GRACE = 2.0
"""Seconds a closing connection may take to flush its close frame before it is aborted."""
DROP_REASONS = ("no_receiver", "queue_full", "to_self")


class RelayError(WgmeshError):
    """The relay cannot serve: its address is taken or the listener could not be opened."""

    code = "relay"


@dataclass(frozen=True)
class RelayConfig:
    """Everything a relay needs; times are seconds, sizes bytes."""

    host: str
    port: int
    coordinator_key: str
    """Base64 raw Ed25519 public key of the coordinator that signs the tickets."""
    relay_id: str = ""
    """This relay's name for ticket audiences; with "" only tickets for every relay (empty audience) pass."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    identity: RelayIdentity | None = None
    """A key of its own and a self-signed certificate (pinned by agents), instead of `tls_cert`/`tls_key`;
    with neither, plain TCP."""
    max_payload: int = DEFAULT_MAX_PAYLOAD
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_unauthenticated_per_source: int = DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    accept_unnamed_tickets: bool = True
    """Take format-1 tickets naming no relay (issued before issue 16): the upgrade window."""
    hello_timeout: float = DEFAULT_HELLO_TIMEOUT
    ping_after: float = 10.0
    dead_after: float = 30.0

    def __post_init__(self) -> None:
        if not 4 <= self.max_payload <= MAX_PAYLOAD:
            raise ValidationError(f"max frame payload {self.max_payload} must be 4 to {MAX_PAYLOAD}")
        for name in (
            "queue_bytes",
            "max_connections",
            "max_unauthenticated_per_source",
            "max_buffered_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValidationError(f"{name} {getattr(self, name)} must be positive")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValidationError("TLS needs both a certificate and its key")
        if self.identity is not None and self.tls_cert is not None:
            raise ValidationError("TLS takes a certificate file or a relay identity, not both")
        if not 0 <= self.port <= 65535:
            raise ValidationError(f"port {self.port} must be 0 to 65535")
        for name in ("hello_timeout", "ping_after", "dead_after"):
            if not getattr(self, name) > 0:
                raise ValidationError(f"{name} must be above 0 seconds")


@dataclass
class RelayStats:
    """Counters since start; `queue_bytes` and `connected_nodes` are the current values."""

    connected_nodes: int = 0
    frames_forwarded: int = 0
    bytes_forwarded: int = 0
    """Frame bytes (header, peer id and datagram) written to receivers."""
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    queue_bytes: int = 0
    connections_total: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    """Close frames the relay sent, by close code name (refusals, `replaced`, `going_away`, …), and
    `slow_reader`: connections dropped because their own replies no longer fit their queue."""


def close_code_for(error: TicketError) -> CloseCode:
    """The close code docs/relay-protocol.md gives a ticket refusal."""
    if isinstance(error, TicketExpiredError):
        return CloseCode.TICKET_EXPIRED
    if isinstance(error, TicketWrongNodeError):
        return CloseCode.WRONG_NODE
    # malformed, forged, not yet valid, another relay's, unnamed, revoked
    return CloseCode.BAD_TICKET


def _close_frame(code: int, message: str) -> bytes:
    raw = message.encode("utf-8")[:MAX_MESSAGE]
    return encode(Close(code, raw.decode("utf-8", "ignore")))


class _Batch:
    """The Data frames of one read for one receiver: slices of the sender's buffer, written together."""

    __slots__ = ("frames", "nbytes", "parts")

    def __init__(self, frames: int, nbytes: int, part: memoryview) -> None:
        self.frames = frames
        self.nbytes = nbytes
        self.parts = [part]


class _Connection(asyncio.BufferedProtocol):
    """One node's TCP (or TLS) connection: its read buffer, authentication state and timers."""

    def __init__(self, relay: RelayServer) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.source = ""
        """The client's address, whose unauthenticated connections are counted while this one is one."""
        self.node_id: int | None = None
        # Merges each receiver's Data frames into slices; stamps our sender id once authenticated.
        self.scanner = FrameScanner(relay.config.max_payload, merge=True, hello_first=True)
        # This read's Data frames per receiving connection, written out when the read is handled.
        self.batches: dict[_Connection, _Batch] = {}
        self.expires_at = 0
        self.issued_at = 0
        self.fingerprint = ""
        self.buf = bytearray(HELLO_BUFFER)
        self.view = memoryview(self.buf)
        self.filled = 0
        self.last_rx = time.monotonic()
        self.last_ping = 0.0
        self.closing = False
        self.lost = False
        self.tls_pending = False
        """Admitted, its TLS handshake still running: nothing may be written (there is no session yet)."""
        self._tls_task: asyncio.Task[asyncio.Transport | None] | None = None
        self.early = b""
        """Bytes of the TLS handshake read before start_tls took the socket over, handed on to it."""
        self.controls = 0
        """Control frames handled in the read being scanned."""
        self.replies: list[bytes] = []
        """Control frames for this node from the read being scanned, written together after it."""
        self.scanning = False
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # --- asyncio callbacks ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            # Datagrams are already sized; Nagle would only add latency to WireGuard's handshakes.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"{peer[0]}:{peer[1]}"
        relay = self.relay
        relay.conns.add(self)
        relay.counters.connections_total += 1
        # TLS starts once the caps admitted the connection and its first bytes came (_tls_started), so a
        # socket that never sends costs no TLS session (~55 KB each with uvloop), and one that does is
        # counted (and refused, without a frame: there is no session to carry one) before it.
        self.tls_pending = relay.tls is not None
        if relay.stopping:
            self.close(CloseCode.GOING_AWAY, "relay stopping")
            return
        refusal = relay.admit(str(peer[0]) if isinstance(peer, tuple) else "?")
        if refusal:
            self.close(CloseCode.BUSY, refusal)
            return
        self.source = str(peer[0]) if isinstance(peer, tuple) else "?"
        relay.unauthenticated[self.source] = relay.unauthenticated.get(self.source, 0) + 1
        # One deadline for the TLS handshake and the hello together.
        self._timer("hello", relay.config.hello_timeout, self._hello_timeout)
        log.debug("connection opened", extra=logs.kv(peer=self.peer))

    def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        self._tls_task = loop.create_task(
            loop.start_tls(
                raw, self, context, server_side=True, ssl_handshake_timeout=self.relay.config.hello_timeout
            )
        )
        self._tls_task.add_done_callback(lambda task: self._tls_done(raw, task))
        # The bytes already read go to the TLS protocol after its connection_made: queued behind the
        # task's first step (which queues connection_made), so two hops.
        loop.call_soon(loop.call_soon, self._feed_early, raw)

    def _tls_started(self, nbytes: int) -> bool:
        """While TLS is pending: True if these bytes came from the raw socket before start_tls took it over
        (kept for it); False if they are the first the finished TLS session decrypted for us."""
        transport = self.transport
        assert transport is not None
        protocol = transport.get_protocol()
        if protocol is self:
            # The client's first handshake bytes: kept for start_tls, and no more read until it has
            # taken the socket over.
            self.early += bytes(self.view[self.filled : self.filled + nbytes])
            transport.pause_reading()
            if self._tls_task is None and self.relay.tls is not None:
                self._start_tls(transport, self.relay.tls)
            return True
        # The handshake is done and data follows at once, before start_tls's caller hears of it: take the
        # session's transport now (the one start_tls returns), so replies go over TLS.
        self.tls_pending = False
        self.transport = protocol._get_app_transport()  # type: ignore[attr-defined]
        return False

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.closing and not self.lost:
            self.transport.resume_reading()

    def _feed_early(self, raw: asyncio.Transport) -> None:
        early, self.early = self.early, b""
        # The TLS protocol start_tls put in (uvloop's reads into buffers; it subclasses no asyncio class).
        protocol = cast(asyncio.BufferedProtocol, raw.get_protocol())
        if not early or self.lost or protocol is self:
            return
        with memoryview(protocol.get_buffer(len(early))) as buf:
            buf[: len(early)] = early
        protocol.buffer_updated(len(early))

    def _tls_done(self, raw: asyncio.Transport, task: asyncio.Task[asyncio.Transport | None]) -> None:
        error = asyncio.CancelledError() if task.cancelled() else task.exception()
        if error is not None:  # a failed handshake costs this connection only
            log.debug("tls handshake failed", extra=logs.kv(peer=self.peer, error=error))
            if not self.lost:
                raw.abort()
                self.connection_lost(error if isinstance(error, Exception) else None)
            return
        tls = task.result()
        if tls is None or self.lost or not self.tls_pending:
            return
        self.tls_pending = False
        self.transport = tls

    def get_buffer(self, sizehint: int) -> memoryview:
        # After every read the unparsed tail moves to the front, so at least READ_BUFFER minus one
        # maximal frame is free here.
        return self.view[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.tls_pending and self._tls_started(nbytes):
            return
        self.filled += nbytes
        self.last_rx = time.monotonic()
        if self.closing:
            self.filled = 0
            return
        try:
            pos = self._scan()
        except ProtocolError as error:
            self.filled = 0
            self.close(error.close_code, error.message)
            return
        except Exception:
            # A relay bug must cost this connection only, never the event loop serving everyone else.
            log.exception("internal error", extra=logs.kv(node=self.node_id, peer=self.peer))
            self.filled = 0
            self.close(CloseCode.INTERNAL, "relay fault")
            return
        left = self.filled - pos
        if self.node_id is not None and len(self.buf) < READ_BUFFER:
            # Authenticated: the full read buffer, with whatever partial frame followed the hello.
            buf = bytearray(READ_BUFFER)
            buf[:left] = self.buf[pos : self.filled]
            self.buf, self.view = buf, memoryview(buf)
        elif pos and left:
            self.buf[:left] = self.buf[pos : self.filled]
        self.filled = left

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost:  # a failed TLS handshake may report it twice
            return
        self.lost = True
        self._detach()
        self.relay.conns.discard(self)
        log.debug("connection lost", extra=logs.kv(peer=self.peer, node=self.node_id, error=exc or ""))

    # --- the hot path -----------------------------------------------------------------------------

    def _scan(self) -> int:
        """Handle every complete frame in the buffer; returns the bytes consumed."""
        self.scanning = True
        self.controls = 0
        try:
            return self.scanner.scan(self.buf, 0, self.filled, self._route, self._frame)
        finally:
            self.scanning = False
            if self.controls >= CONTROL_BURST and self.transport is not None and not self.closing:
                # A flood of control frames: let every other connection have its turn before the next read.
                self.transport.pause_reading()
                asyncio.get_running_loop().call_soon(self._resume_reading)
            # Frames decoded before a bad one are still delivered: they were authenticated.
            if self.batches:
                self._deliver()
            self._flush_replies()

    def _route(self, peer: int, start: int, end: int, frames: int) -> None:
        """Queue a run of Data frames for `peer` (already stamped with our id by the scanner) in this
        read's batch for its connection."""
        relay = self.relay
        if peer == self.node_id:
            relay.drops["to_self"] += frames
            return
        target = relay.routes.get(peer)
        if target is None:
            relay.drops["no_receiver"] += frames
            return
        batch = self.batches.get(target)
        if batch is None:
            self.batches[target] = _Batch(frames, end - start, self.view[start:end])
        else:
            batch.frames += frames
            batch.nbytes += end - start
            batch.parts.append(self.view[start:end])

    def _deliver(self) -> None:
        relay = self.relay
        limit = relay.config.queue_bytes
        counters = relay.counters
        for target, batch in self.batches.items():
            frames = batch.frames
            transport = target.transport
            if target.closing or transport is None:
                relay.drops["no_receiver"] += frames
            elif transport.get_write_buffer_size() + batch.nbytes > limit or not relay.room_for(batch.nbytes):
                relay.drops["queue_full"] += frames
            else:
                # One copy out of the read buffer (which is reused) and one send for the whole batch.
                transport.write(b"".join(batch.parts))
                relay.buffered += batch.nbytes
                counters.frames_forwarded += frames
                counters.bytes_forwarded += batch.nbytes
        self.batches.clear()

    def _frame(self, kind: int, start: int, end: int) -> bool:
        self.controls += 1
        self._control(parse_payload(kind, self.view, start, end))
        return self.closing

    # --- control frames ---------------------------------------------------------------------------

    def _control(self, frame: Frame) -> None:
        if isinstance(frame, Close):
            log.info(
                "node closed",
                extra=logs.kv(
                    node=self.node_id, peer=self.peer, code=close_code_name(frame.code), reason=frame.message
                ),
            )
            self._shutdown()
        elif isinstance(frame, Hello):
            self._hello(frame)
        elif isinstance(frame, Ping):
            self._reply(encode(Pong(frame.token)))
        elif isinstance(frame, Pong):
            pass  # it already counted as traffic for liveness
        elif isinstance(frame, HelloOk):
            raise ProtocolError("hello-ok is sent by relays, not nodes")

    def _hello(self, hello: Hello) -> None:
        relay = self.relay
        fingerprint = ticket_fingerprint(hello.ticket)
        if self.node_id is not None and hello.node_id != self.node_id:
            self.close(
                CloseCode.WRONG_NODE,
                f"this connection is node {self.node_id}; a refresh cannot name node {hello.node_id}",
            )
            return
        try:
            ticket = verify_ticket(
                relay.key,
                hello.ticket,
                time.time(),
                hello.node_id,
                relay_id=relay.config.relay_id or None,
                accept_unnamed=relay.config.accept_unnamed_tickets,
            )
            if relay.revocations.revoked(ticket.node_id, ticket.issued_at):
                raise TicketRevokedError(
                    f"relay ticket of node {ticket.node_id} is revoked: the node was deleted or replaced"
                )
        except TicketError as error:
            log.info(
                "ticket refused",
                extra=logs.kv(node=hello.node_id, peer=self.peer, ticket=fingerprint, reason=error.code),
            )
            self.close(close_code_for(error), error.message)
            return
        refresh = self.node_id is not None
        self._authenticated()
        self.node_id = hello.node_id
        self.scanner.stamp = peer_id_field(hello.node_id)
        self.scanner.hello_first = False
        self.expires_at = ticket.expires_at
        self.issued_at = ticket.issued_at
        self.fingerprint = fingerprint
        self._cancel("hello")
        self._timer("expiry", max(0.0, ticket.expires_at - time.time()), self._ticket_expired)
        self._reply(encode(HelloOk(node_id=hello.node_id, expires_at=ticket.expires_at, version=VERSION)))
        log.info(
            "ticket refreshed" if refresh else "node authenticated",
            extra=logs.kv(
                node=hello.node_id,
                peer=self.peer,
                ticket=fingerprint,
                expires_at=ticket.expires_at,
                unnamed=ticket.relays is None,
            ),
        )
        if not refresh:
            old = relay.routes.get(hello.node_id)
            relay.routes[hello.node_id] = self
            if old is not None and old is not self:
                old.close(CloseCode.REPLACED, f"a newer connection of node {hello.node_id} authenticated")

    # --- timers and closing -----------------------------------------------------------------------

    def _hello_timeout(self) -> None:
        self.close(
            CloseCode.NOT_AUTHENTICATED,
            f"no hello within {self.relay.config.hello_timeout:g} s of connecting",
        )

    def _ticket_expired(self) -> None:
        self.close(CloseCode.TICKET_EXPIRED, "relay ticket expired without a refresh")

    def ping(self, now: float) -> None:
        """Probe a silent connection; any frame back (the pong) proves it alive."""
        self.last_ping = now
        self._reply(encode(Ping(time.monotonic_ns() & 0xFFFF_FFFF_FFFF_FFFF)))

    def _reply(self, data: bytes) -> None:
        """Queue a control frame of our own; it counts against this connection's queue like Data does.

        A reply that does not fit means the client stopped reading what it asks for (a ping flood never
        read): the connection is dropped at once, since a close frame would only wait behind the rest.
        """
        if self.scanning:
            # One write per read, however many pings it held: tiny writes cost far more than their bytes.
            self.replies.append(data)
        else:
            self._write_reply(data)

    def _write_reply(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        if transport.get_write_buffer_size() + len(data) > self.relay.config.queue_bytes:
            self._drop_slow_reader()
        elif self.relay.room_for(len(data)):
            transport.write(data)
            self.relay.buffered += len(data)

    def _flush_replies(self) -> None:
        if self.replies:
            data = b"".join(self.replies)
            self.replies.clear()
            self._write_reply(data)

    def _drop_slow_reader(self) -> None:
        relay = self.relay
        relay.refused["slow_reader"] = relay.refused.get("slow_reader", 0) + 1
        log.info(
            "closing connection",
            extra=logs.kv(node=self.node_id, peer=self.peer, code="slow_reader", reason="send queue full"),
        )
        self.closing = True
        self._detach()
        if self.transport is not None:
            self.transport.abort()

    def _authenticated(self) -> None:
        """This connection no longer counts as unauthenticated for its source address."""
        if not self.source:
            return
        relay = self.relay
        left = relay.unauthenticated.get(self.source, 0) - 1
        if left > 0:
            relay.unauthenticated[self.source] = left
        else:
            relay.unauthenticated.pop(self.source, None)
        self.source = ""

    def close(self, code: int, message: str) -> None:
        """Send close(code, message) after whatever is queued, then disconnect."""
        if self.closing or self.transport is None:
            return
        self.relay.refused[close_code_name(code)] = self.relay.refused.get(close_code_name(code), 0) + 1
        log.info(
            "closing connection",
            extra=logs.kv(node=self.node_id, peer=self.peer, code=close_code_name(code), reason=message),
        )
        self._flush_replies()  # what it was answered before, then why it is closed
        if self.tls_pending:
            # No TLS session yet to carry a close frame: drop the socket.
            self.closing = True
            self._detach()
            self.transport.abort()
            return
        self.transport.write(_close_frame(code, message))
        self._shutdown()

    def _shutdown(self) -> None:
        if self.closing or self.transport is None:
            return
        self.closing = True
        self._detach()
        self.transport.close()
        # close() waits for the queue to drain; a receiver that stopped reading must not hold it forever.
        self._timer("abort", CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        if not self.lost and self.transport is not None:
            self.transport.abort()

    def _detach(self) -> None:
        """Stop routing to this connection and cancel its timers (except the abort that ends it)."""
        relay = self.relay
        self._authenticated()
        if self.node_id is not None and relay.routes.get(self.node_id) is self:
            del relay.routes[self.node_id]
        for name in ("hello", "expiry"):
            self._cancel(name)
        if self.lost:
            self._cancel("abort")

    def _timer(self, name: str, delay: float, callback: Callable[[], object]) -> None:
        self._cancel(name)
        self._timers[name] = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()


class RelayServer:
    """A relay listening on one address; embed it in any running event loop with `start`/`stop`."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.key = load_public_key(config.coordinator_key)
        self.routes: dict[int, _Connection] = {}
        self.conns: set[_Connection] = set()
        self.counters = RelayStats()
        self.drops = self.counters.drops
        self.refused = self.counters.refused
        self.revocations = Revocations()
        self.stopping = False
        self.tls: ssl.SSLContext | None = None
        self.unauthenticated: dict[str, int] = {}
        """Open connections without an accepted hello, by source address."""
        self.buffered = 0
        """Bytes queued on all connections: counted up as they are written and recounted exactly when
        the cap seems reached (and at every sweep), since transports drain without telling."""
        self._recounted = 0.0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def admit(self, source: str) -> str:
        """Why a new connection from `source` is refused (the caps), or "" to admit it; it is in `conns`."""
        config = self.config
        if len(self.conns) > config.max_connections:
            return f"relay at its limit of {config.max_connections} connections"
        if sum(self.unauthenticated.values()) >= config.max_connections // UNAUTHENTICATED_SHARE:
            return "relay at its limit of connections without a hello"
        if self.unauthenticated.get(source, 0) >= config.max_unauthenticated_per_source:
            return f"{config.max_unauthenticated_per_source} connections from {source} without a hello"
        return ""

    def revoke(self, revoked: list[RevokedTicket]) -> None:
        """Hold this revocation list, and close the connections whose ticket it revokes."""
        self.revocations.replace(revoked)
        for conn in list(self.routes.values()):
            if conn.node_id is not None and self.revocations.revoked(conn.node_id, conn.issued_at):
                conn.close(
                    CloseCode.BAD_TICKET,
                    f"relay ticket of node {conn.node_id} is revoked: the node was deleted or replaced",
                )

    def room_for(self, nbytes: int) -> bool:
        """True if `nbytes` more fit the relay-wide buffered bytes cap."""
        cap = self.config.max_buffered_bytes
        if self.buffered + nbytes <= cap:
            return True
        now = time.monotonic()
        if now - self._recounted >= RECOUNT_INTERVAL:
            self._recount(now)
        return self.buffered + nbytes <= cap

    def _recount(self, now: float) -> None:
        self._recounted = now
        self.buffered = sum(
            conn.transport.get_write_buffer_size()
            for conn in self.conns
            if conn.transport is not None and not conn.lost
        )

    @property
    def port(self) -> int:
        """The bound port (the configured one may be 0)."""
        if self._server is None or not self._server.sockets:
            raise RelayError("relay is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting; RelayError (one readable line) if the address is taken."""
        config = self.config
        context = self.tls = _tls_context(config)
        loop = asyncio.get_running_loop()
        try:
            # Plain TCP listener: each connection starts TLS itself once admitted (_Connection).
            self._server = await loop.create_server(
                lambda: _Connection(self),
                config.host,
                config.port,
                reuse_address=True,
                backlog=1024,
            )
        except OSError as error:
            # uvloop's strerror repeats the address; the errno's own text is the readable part.
            reason = os.strerror(error.errno).lower() if error.errno else str(error)
            raise RelayError(f"cannot listen on {config.host}:{config.port}: {reason}") from None
        self._schedule_sweep()
        log.info(
            "listening",
            extra=logs.kv(
                host=config.host,
                port=self.port,
                tls=context is not None,
                pin=str(config.identity.pin) if config.identity is not None else None,
                relay_id=config.relay_id,
                max_payload=config.max_payload,
                queue_bytes=config.queue_bytes,
                max_connections=config.max_connections,
                max_unauthenticated_per_source=config.max_unauthenticated_per_source,
                max_buffered_bytes=config.max_buffered_bytes,
                hello_timeout=config.hello_timeout,
                unnamed_tickets="accept" if config.accept_unnamed_tickets else "refuse",
            ),
        )
        if not config.relay_id:
            log.warning(
                "no relay id: tickets naming relays are refused here; give --relay-id as the coordinator "
                "announces this relay"
            )

    async def stop(self) -> None:
        """Close the listener, send close(going_away) to every connection, and wait briefly for them."""
        if self._server is None:
            return
        self.stopping = True
        server, self._server = self._server, None
        server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.conns):
            conn.close(CloseCode.GOING_AWAY, "relay stopping")
        deadline = time.monotonic() + CLOSE_GRACE
        while self.conns and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        await server.wait_closed()
        log.info("stopped", extra=logs.kv(**self.stats_fields()))

    def stats(self) -> RelayStats:
        """A snapshot of the counters."""
        c = self.counters
        return RelayStats(
            connected_nodes=len(self.routes),
            frames_forwarded=c.frames_forwarded,
            bytes_forwarded=c.bytes_forwarded,
            drops=dict(c.drops),
            queue_bytes=sum(
                conn.transport.get_write_buffer_size()
                for conn in self.conns
                if conn.transport is not None and not conn.lost
            ),
            connections_total=c.connections_total,
            refused=dict(c.refused),
        )

    def stats_fields(self) -> dict[str, int]:
        """The stats flattened to key=value fields for a log line."""
        s = self.stats()
        fields = {
            "connected_nodes": s.connected_nodes,
            "frames_forwarded": s.frames_forwarded,
            "bytes_forwarded": s.bytes_forwarded,
            "queue_bytes": s.queue_bytes,
            "connections_total": s.connections_total,
        }
        fields.update({f"dropped_{reason}": n for reason, n in s.drops.items()})
        fields.update({f"closed_{name}": n for name, n in sorted(s.refused.items())})
        return fields

    def _schedule_sweep(self) -> None:
        config = self.config
        interval = min(1.0, config.ping_after / 4, config.dead_after / 4)
        self._sweeper = asyncio.get_running_loop().call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Liveness: ping connections silent for ping_after, close those silent for dead_after."""
        config = self.config
        now = time.monotonic()
        self._recount(now)
        for conn in list(self.conns):
            if conn.closing:
                continue
            silent = now - conn.last_rx
            if silent >= config.dead_after:
                conn.close(CloseCode.NORMAL, f"nothing received for {silent:.0f} s")
            elif (
                conn.node_id is not None
                and silent >= config.ping_after
                and now - conn.last_ping >= config.ping_after
            ):
                conn.ping(now)
        if not self.stopping:
            self._schedule_sweep()


def _tls_context(config: RelayConfig) -> ssl.SSLContext | None:
    if config.identity is not None:
        return config.identity.server_context()
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = server_context()
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)
        raise ValidationError(
            f"cannot load TLS certificate {config.tls_cert} with key {config.tls_key}: {reason}"
        ) from None
    return context


async def run_relay(
    config: RelayConfig,
    stop: asyncio.Event | None = None,
    *,
    stats_interval: float = 60.0,
    metrics_listen: tuple[str, int] | None = None,
    revocations: RevocationPuller | None = None,
) -> None:
    """Serve until `stop` is set (or, without one, until SIGTERM/SIGINT), logging stats periodically;
    with `metrics_listen`, answer Prometheus scrapes there (on this loop); with `revocations`, pull the
    coordinator's revocation list."""
    from wgmesh.relay.metrics import relay_registry, serve_metrics  # noqa: PLC0415 - it imports this module

    server = RelayServer(config)
    await server.start()
    metrics: asyncio.Server | None = None
    if metrics_listen is not None:
        try:
            metrics = await serve_metrics(relay_registry(server), *metrics_listen)
        except BaseException:
            await server.stop()
            raise
    loop = asyncio.get_running_loop()
    puller = asyncio.create_task(revocations.run(server.revoke)) if revocations is not None else None
    handled: list[signal.Signals] = []
    if stop is None:
        # Only the standalone relay owns the process signals; an embedding program keeps its own.
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), stats_interval)
            except TimeoutError:
                log.info("stats", extra=logs.kv(**server.stats_fields()))
    finally:
        # The handlers stay until the connections are told: a second SIGTERM must not cut that short.
        try:
            if puller is not None:
                puller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await puller
            if metrics is not None:
                metrics.close()
            await server.stop()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
