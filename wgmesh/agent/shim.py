"""The udp2tcp shim: WireGuard datagrams of relayed peers carried over TCP connections to relays.

Each relayed peer gets its own UDP socket on 127.0.0.1 and WireGuard's endpoint for that peer is set to it,
so WireGuard sees one stable endpoint per peer. Datagrams WireGuard sends there are framed to the relay as
`data(peer id)`; frames arriving from any relay are sent to the local WireGuard port *from the socket of
their sender*, which makes WireGuard roam that peer onto the shim by itself. Probe messages inside frames
go to the prober instead of WireGuard.

Everything here runs on one event loop thread (`NetLoop`); sockets are drained on every wake-up (until
they would block) rather than one datagram per callback, which is what keeps a Python shim near
wireguard-go's own speed. A relay connection is read into the link's own buffer, and the datagrams of one
sender and one size in a read go to WireGuard in one UDP GSO send (the kernel cuts it into the datagrams
WireGuard reads one by one; a kernel that refuses it gets one send each). The agent calls in from other
threads only through the `*_threadsafe` methods. (Batching the reads from WireGuard with recvmmsg through
ctypes was measured and not kept: docs/performance.md, "Shim capacity".)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from wgmesh.agent import relay_choice
from wgmesh.agent.backoff import Backoff
from wgmesh.agent.probe_wire import is_probe
from wgmesh.logs import kv
from wgmesh.models import LocalRelay, RelayGrant, RelayInfo
from wgmesh.pins import Pin
from wgmesh.relay import protocol
from wgmesh.relay.identity import pinned_client_context, refusal
from wgmesh.relay.protocol import (
    DATA_HEADER,
    DATA_HEADER_SIZE,
    Close,
    CloseCode,
    FrameType,
    Hello,
    HelloOk,
    Ping,
    Pong,
    close_code_name,
)
from wgmesh.relay.tickets import ticket_fingerprint
from wgmesh.values import Endpoint

log = logging.getLogger("wgmesh.agent.shim")

LOCALHOST = "127.0.0.1"
PING_INTERVAL = 2.0
"""Relay pings: the RTT that picks the relay, and liveness (no pong for DEAD_AFTER: reconnect)."""
DEAD_AFTER = 6.0
SEND_LIMIT = 4 * 1024 * 1024
"""Bytes queued towards a relay before datagrams are dropped (WireGuard and TCP inside recover)."""
DRAIN_MAX = 256
"""Datagrams read from one socket per wake-up: bounds the time one busy peer holds the loop."""
DRAIN_BUFFER = 512 * 1024
READ_BUFFER = 256 * 1024
"""A relay connection's read buffer: a read carries up to ~180 datagrams of 1,400 bytes, and a partial frame
(at most 64 KiB) always leaves room for the next read."""
_DATA = int(FrameType.DATA)
_DATAGRAM_ROOM = DATA_HEADER_SIZE + 65535
_PROBE_FIRST = ord("W")
SOCKET_BUFFER = 4 * 1024 * 1024
"""Per-socket buffers asked for (the kernel caps them at net.core.[rw]mem_max)."""
TICKET_CODES = frozenset({CloseCode.BAD_TICKET, CloseCode.TICKET_EXPIRED, CloseCode.WRONG_NODE})
UDP_SEGMENT = 103
"""<linux/udp.h>: the segment size of a UDP GSO send (Linux 4.18 and later)."""
GSO_MAX_SEGMENTS = 64
"""The kernel's UDP_MAX_SEGMENTS: datagrams one GSO send may carry."""
GSO_MAX_BYTES = 65000
"""What one GSO send may carry in all: its payload is one UDP datagram's, under 64 KiB."""
_NO_GSO = frozenset({errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP})
_U16 = struct.Struct("=H")


class _Run:
    """Datagrams from one sender on their way to WireGuard that one UDP GSO send can carry: every one of the
    first one's size, the last one possibly shorter (the kernel cuts the send into segments of that size)."""

    __slots__ = ("datagrams", "nbytes", "segment", "sender")

    def __init__(self) -> None:
        self.datagrams: list[bytes | memoryview] = []
        self.sender = 0
        self.segment = 0
        self.nbytes = 0

    def __bool__(self) -> bool:
        return bool(self.datagrams)

    def joins(self, sender: int, size: int) -> bool:
        """Whether a datagram of `size` from `sender` can join this run."""
        return (
            sender == self.sender
            and len(self.datagrams[-1]) == self.segment  # a shorter one ended the run
            and size <= self.segment
            and len(self.datagrams) < GSO_MAX_SEGMENTS
            and self.nbytes + size <= GSO_MAX_BYTES
        )

    def add(self, sender: int, datagram: bytes | memoryview, size: int) -> None:
        """Append (the caller checked `joins`, or the run is empty)."""
        if not self.datagrams:
            self.sender, self.segment, self.nbytes = sender, size, 0
        self.datagrams.append(datagram)
        self.nbytes += size

    def clear(self) -> None:
        """Drop the datagrams (views of a buffer that is about to change)."""
        self.datagrams.clear()


@dataclass
class ShimCounters:
    """Datagrams moved and dropped, for status and metrics."""

    to_relay: int = 0
    from_relay: int = 0
    """Datagrams handed to WireGuard from any link (a relay or a peer's agent straight)."""
    to_direct: int = 0
    """Datagrams sent over direct TCP links to peers' agents."""
    from_direct: int = 0
    """Datagrams received over direct TCP links (also in `from_relay` once handed to WireGuard)."""
    dropped: dict[str, int] = field(default_factory=dict)
    refused_relays: dict[str, int] = field(default_factory=dict)
    """Connections refused because the relay presented another key than its pin, by relay id."""

    def drop(self, reason: str, count: int = 1) -> None:
        """Count `count` datagrams dropped for `reason`."""
        self.dropped[reason] = self.dropped.get(reason, 0) + count


@dataclass(frozen=True)
class RelayView:
    """One relay connection as status shows it."""

    id: str
    url: str
    up: bool
    rtt: float | None
    error: str | None


class FrameLink(asyncio.BufferedProtocol):
    """A TCP connection carrying relay-protocol frames for the shim: read into its own buffer, data frames
    handed to WireGuard as views of it, the other frames to `_control`. A relay link and a direct link to
    a peer's agent (agent/direct_tcp.py) differ in their hello and in whom their data frames name."""

    direct = False
    """Whether this link goes straight to one peer (data frames name the sender) or to a relay (they name
    the receiver on the way in and the sender on the way out)."""

    def __init__(self, shim: RelayShim, *, buffer: int = READ_BUFFER, hello_first: bool = False) -> None:
        self.shim = shim
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray(buffer)
        """READ_BUFFER, or less for a stranger's connection until it authenticates (`grow`)."""
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._scanner = protocol.FrameScanner(hello_first=hello_first)
        self.up = False
        self.last_heard = 0.0
        self.error: str | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the transport reads to: the free part of the read buffer (the partial frame left by the
        previous read is at its front, so at least READ_BUFFER minus one largest frame is free)."""
        return self._view[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        """Every complete frame read so far: data frames straight to WireGuard, the rest decoded.

        The transport reads into this link's buffer and data frames are handed to WireGuard as views of it,
        with no copy of the stream and no frame object; only a partial frame at the end moves to the front.
        """
        self._filled += nbytes
        buf, view = self._buffer, self._view
        # A relay link's datagrams go to the shim as they are (the relay stamped the sender): no call between.
        accept = self._data if self.direct else self.shim.gather

        def on_frame(kind: int, start: int, end: int) -> bool:
            self._control(protocol.parse_payload(kind, view, start, end))
            return False

        try:
            pos = self._scanner.scan(
                buf,
                0,
                self._filled,
                lambda peer, start, end, _: accept(peer, view[start + DATA_HEADER_SIZE : end]),
                on_frame,
            )
        except protocol.ProtocolError as exc:
            self._note_error(f"protocol error: {exc.message}")
            if self.transport is not None:
                self.transport.abort()
            pos = self._filled
        finally:
            self.shim.flush()  # the gathered datagrams are views of the buffer: sent before it changes
        left = self._filled - pos
        if pos and left:
            buf[:left] = buf[pos : self._filled]
        self._filled = left
        self.last_heard = time.monotonic()
        if self.up and len(self._buffer) < READ_BUFFER:
            self._grow()

    def _grow(self) -> None:
        """The full read buffer, once authenticated (never during a scan: its views are in use there)."""
        bigger = bytearray(READ_BUFFER)
        bigger[: self._filled] = self._buffer[: self._filled]
        self._buffer, self._view = bigger, memoryview(bigger)

    def _data(self, peer: int, datagram: memoryview) -> None:
        """A data frame naming `peer`: its datagram to WireGuard from that peer's socket."""
        self.shim.gather(peer, datagram)

    def _control(self, frame: protocol.Frame) -> None:
        raise NotImplementedError

    def _note_error(self, error: str) -> None:
        raise NotImplementedError

    def send(self, payload: bytes | bytearray, datagrams: int) -> None:
        """Queue framed datagrams unless the connection is down or its queue is full (then count drops)."""
        transport = self.transport
        counters = self.shim.counters
        if transport is None or not self.up or transport.is_closing():
            counters.drop("direct_down" if self.direct else "relay_down", datagrams)
            return
        if transport.get_write_buffer_size() > SEND_LIMIT:
            counters.drop("direct_queue_full" if self.direct else "relay_queue_full", datagrams)
            return
        transport.write(payload)
        if self.direct:
            counters.to_direct += datagrams
        else:
            counters.to_relay += datagrams


class RelayLink(FrameLink):
    """One connection to one relay: hello with the ticket, then data both ways, pings for RTT and liveness."""

    def __init__(self, shim: RelayShim, info: RelayInfo) -> None:
        super().__init__(shim)
        self.info = info
        self.rtt: float | None = None
        self.recent: collections.deque[float] = collections.deque(maxlen=relay_choice.SAMPLES)
        """The latest RTT samples: the home is chosen on their minimum, which one late pong does not move."""
        self.closed = False
        self._backoff = Backoff(initial=0.5, maximum=10.0)
        self._task: asyncio.Task[None] | None = None
        self.pin = Pin.parse(info.pin) if info.pin is not None else None

    # -- lifecycle, on the loop ------------------------------------------------------------------

    def start(self) -> None:
        """Connect, and keep reconnecting until `stop`."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        """Close for good (the relay left the grant, or the agent stops)."""
        self.closed = True
        if self.transport is not None:
            with contextlib.suppress(protocol.ProtocolError):
                self.transport.write(protocol.encode(Close(CloseCode.NORMAL, "relay no longer used")))
            self.transport.close()
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        split = urlsplit(self.info.url)
        host, port = split.hostname or "", split.port or 0
        context: ssl.SSLContext | None = None
        if split.scheme == "tls" and self.pin is not None:
            context = pinned_client_context()  # the key is checked in connection_made, before the hello
        elif split.scheme == "tls":
            context = ssl.create_default_context(cafile=str(self.shim.ca_file) if self.shim.ca_file else None)
        while not self.closed:
            lost = loop.create_future()
            self._lost = lost
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: self, host, port, ssl=context), timeout=5.0
                )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                self._note_error(f"connect: {exc}")
                await asyncio.sleep(self._backoff.next_delay())
                continue
            await self._keepalive(lost)
            if not self.closed:
                await asyncio.sleep(self._backoff.next_delay())

    async def _keepalive(self, lost: asyncio.Future[None]) -> None:
        while not lost.done():
            now = time.monotonic()
            if self.transport is not None and self.up:
                if now - self.last_heard > DEAD_AFTER:
                    self._note_error(f"no answer for {DEAD_AFTER:g} s")
                    self.transport.abort()
                    break
                self.transport.write(protocol.encode(Ping(time.monotonic_ns())))
            elif self.transport is not None and now - self.last_heard > 10.0:
                self._note_error("no hello-ok within 10 s")
                self.transport.abort()
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(lost), PING_INTERVAL)

    def _note_error(self, error: str) -> None:
        if error != self.error:
            log.warning("relay unavailable", extra=kv(relay=self.info.id, error=error))
        self.error = error

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Check a pinned relay's key, then send hello at once; TCP_NODELAY because every frame is a
        latency-sensitive datagram."""
        # uvloop's transports are not asyncio.Transport subclasses, though they implement it.
        self.transport = cast(asyncio.Transport, transport)
        self._filled = 0
        self.last_heard = time.monotonic()
        if self.pin is not None and not self._holds_pinned_key():
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.set_write_buffer_limits(high=SEND_LIMIT)
        self.send_hello()

    def _holds_pinned_key(self) -> bool:
        """Whether the relay presented the pinned key; if not, the connection is aborted before the
        ticket (a bearer secret) is sent, and the relay counts as unavailable until the next attempt."""
        assert self.transport is not None and self.pin is not None
        tls = self.transport.get_extra_info("ssl_object")
        reason = refusal(tls.getpeercert(binary_form=True) if tls is not None else None, self.pin)
        if reason is None:
            return True
        counts = self.shim.counters.refused_relays
        counts[self.info.id] = counts.get(self.info.id, 0) + 1
        error = f"refused: {reason}"
        if error != self.error:  # once per change, not at every reconnection
            log.warning("relay refused", extra=kv(relay=self.info.id, url=self.info.url, reason=reason))
        self.error = error
        self.transport.abort()
        return False

    def send_hello(self) -> None:
        """Authenticate (or refresh the ticket of) this connection."""
        grant = self.shim.grant
        if self.transport is None or grant is None:
            return
        self.transport.write(protocol.encode(Hello(self.shim.node_id, grant.ticket)))

    def _control(self, frame: protocol.Frame) -> None:
        shim = self.shim
        if isinstance(frame, Ping):
            if self.transport is not None:
                self.transport.write(protocol.encode(Pong(frame.token)))
        elif isinstance(frame, Pong):
            self.rtt = max(time.monotonic_ns() - frame.token, 0) / 1e9
            self.recent.append(self.rtt)
            shim.rehome()
        elif isinstance(frame, HelloOk):
            if not self.up:
                log.info(
                    "relay connected",
                    extra=kv(relay=self.info.id, ticket=ticket_fingerprint(shim.grant.ticket))
                    if shim.grant
                    else kv(relay=self.info.id),
                )
            self.up = True
            self.error = None
            self._backoff.reset()
            shim.rehome()
            if self.transport is not None:
                self.transport.write(protocol.encode(Ping(time.monotonic_ns())))
        elif isinstance(frame, Close):
            self._note_error(f"closed by relay: {close_code_name(frame.code)} {frame.message}".strip())
            if frame.code in TICKET_CODES:
                shim.ticket_refused()

    def connection_lost(self, exc: Exception | None) -> None:
        """Mark down; `_run` reconnects after a back-off."""
        was_up = self.up
        self.up = False
        self.rtt = None
        self.recent.clear()
        self.transport = None
        if not self.closed:
            self.shim.rehome()
        if was_up and not self.closed:
            self._note_error(f"connection lost{': ' + str(exc) if exc else ''}")
        if not self._lost.done():
            self._lost.set_result(None)

    _lost: asyncio.Future[None]

    def view(self) -> RelayView:
        """This link for status."""
        return RelayView(self.info.id, self.info.url, self.up, self.rtt, self.error)


class RelayShim:
    """All relay connections and the per-peer local sockets of one agent."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        node_id: int,
        wg_port: int,
        on_probe: Callable[[int, bytes], None],
        on_ticket_refused: Callable[[], None] = lambda: None,
        *,
        ca_file: Path | None = None,
    ) -> None:
        self.loop = loop
        self.node_id = node_id
        self.wg_addr = (LOCALHOST, wg_port)
        self.on_probe = on_probe
        self.on_ticket_refused = on_ticket_refused
        self.ca_file = ca_file
        self.grant: RelayGrant | None = None
        self.links: dict[str, RelayLink] = {}
        self.home: str | None = None
        """The relay datagrams go to (`rehome`); only the loop changes it."""
        self.counters = ShimCounters()
        self._sockets: dict[int, socket.socket] = {}
        self._out = bytearray(DRAIN_BUFFER)  # reused by every drain (all on the loop thread)
        self._ports: dict[int, int] = {}
        self._peers: frozenset[int] = frozenset()
        """The netmap's peers (`retain_threadsafe`): frames from any other sender are dropped, so a ticket
        holder the netmap does not list cannot make this agent open a socket per sender id it makes up."""
        self._lock = threading.Lock()
        self.direct: dict[int, FrameLink] = {}
        """The direct TCP link to each peer that has one up (agent/direct_tcp.py keeps it); only the loop
        changes it."""
        self._run = _Run()
        self._gso = True
        """Whether WireGuard's datagrams go out in runs (UDP GSO); off for good after the kernel refused it."""

    # -- from other threads -----------------------------------------------------------------------

    def configure_threadsafe(self, grant: RelayGrant) -> None:
        """Use these relays and this ticket (connects, disconnects or re-hellos as needed)."""
        self.loop.call_soon_threadsafe(self._configure, grant)

    def endpoint_for(self, peer_id: int) -> Endpoint:
        """`127.0.0.1:PORT` of the peer's shim socket, made on first use; safe from any thread."""
        with self._lock:
            port = self._ports.get(peer_id)
            if port is not None:
                return Endpoint(LOCALHOST, port)
            sock = self._open_socket()
            port = sock.getsockname()[1]
            self._sockets[peer_id] = sock
            self._ports[peer_id] = port
        self.loop.call_soon_threadsafe(self._watch, peer_id, sock)
        return Endpoint(LOCALHOST, port)

    def peer_of_endpoint(self, endpoint: Endpoint | None) -> int | None:
        """The peer whose shim socket `endpoint` is (WireGuard roamed there), else None."""
        if endpoint is None or endpoint.host != LOCALHOST:
            return None
        with self._lock:
            for peer_id, p in self._ports.items():
                if p == endpoint.port:
                    return peer_id
        return None

    def retain_threadsafe(self, peer_ids: set[int]) -> None:
        """The netmap's peers: accept frames from these only, and close the sockets of peers that left."""
        self.loop.call_soon_threadsafe(self._retain, peer_ids)

    def stop_threadsafe(self) -> None:
        """Close every link and socket."""
        self.loop.call_soon_threadsafe(self._stop)

    def active(self) -> RelayLink | None:
        """The relay datagrams go to, the home (wgmesh/agent/relay_choice.py), if it is up. Any thread may
        ask; the home is only moved on the loop, as the links come up, go down and measure their RTT."""
        home = self.home
        link = self.links.get(home) if home is not None else None
        return link if link is not None and link.up else None

    def carrier(self, peer_id: int) -> FrameLink | None:
        """The link a peer's datagrams go over: its direct TCP link when one is up, else the relay home
        (agent/carrier.py); None when neither is up."""
        link = self.direct.get(peer_id)
        if link is not None and link.up:
            return link
        return self.active()

    def path_up(self, peer_id: int) -> bool:
        """Whether the shim can carry the peer's datagrams now (straight or through a relay)."""
        return self.carrier(peer_id) is not None

    def rehome(self) -> None:
        """Choose the home again after a link changed (on the loop); a move is logged."""
        candidates = [
            relay_choice.Candidate(rid, link.up, link.rtt) for rid, link in list(self.links.items())
        ]
        home = relay_choice.choose(self.home, candidates)
        if home != self.home:
            link = self.links.get(home) if home is not None else None
            rtt = round(link.rtt * 1000, 2) if link is not None and link.rtt is not None else None
            log.info("relay home", extra=kv(relay=home or "none", previous=self.home or "none", rtt_ms=rtt))
            self.home = home

    def views(self) -> list[RelayView]:
        """Every relay connection."""
        return [link.view() for link in list(self.links.values())]

    def local_relays(self) -> list[LocalRelay]:
        """Every relay connection for the agent's local status, its home marked."""
        home = self.home
        return [
            LocalRelay(
                id=v.id,
                url=v.url,
                up=v.up,
                rtt_ms=round(v.rtt * 1000, 3) if v.rtt is not None else None,
                home=v.id == home,
                error=v.error,
            )
            for v in self.views()
        ]

    # -- on the loop ------------------------------------------------------------------------------

    def _configure(self, grant: RelayGrant) -> None:
        ticket_changed = self.grant is None or self.grant.ticket != grant.ticket
        self.grant = grant
        wanted = {r.id: r for r in grant.relays}
        for rid in list(self.links):
            if rid not in wanted or self.links[rid].info != wanted[rid]:
                self.links.pop(rid).stop()
        self.rehome()
        for rid, info in wanted.items():
            if rid not in self.links:
                link = RelayLink(self, info)
                self.links[rid] = link
                link.start()
            elif ticket_changed:
                self.links[rid].send_hello()

    def ticket_refused(self) -> None:
        """A relay refused the ticket: the agent fetches a fresh grant."""
        self.on_ticket_refused()

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        sock.bind((LOCALHOST, 0))
        sock.setblocking(False)
        return sock

    def _watch(self, peer_id: int, sock: socket.socket) -> None:
        self.loop.add_reader(sock.fileno(), self._drain, peer_id, sock)

    def _drain(self, peer_id: int, sock: socket.socket) -> None:
        """Everything WireGuard sent to this peer's socket since the last wake-up, framed in one write.

        Datagrams are read straight into the outgoing buffer behind their frame header (recvfrom_into), so
        there is one copy per datagram and no 64 KiB allocation per read.
        """
        out = self._out
        view = memoryview(out)
        pack_data_header = DATA_HEADER.pack_into
        link = self.carrier(peer_id)
        # To a relay a frame names its receiver; straight to the peer it names its sender.
        frame_id = self.node_id if link is not None and link.direct else peer_id
        pos = 0
        count = 0
        wg_addr = self.wg_addr
        try:
            for _ in range(DRAIN_MAX):
                if len(out) - pos < _DATAGRAM_ROOM:
                    break
                try:
                    nbytes, source = sock.recvfrom_into(view[pos + DATA_HEADER_SIZE :])
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                if source != wg_addr:
                    self.counters.drop("foreign_source")
                    continue
                pack_data_header(out, pos, nbytes + 4, _DATA, 0, frame_id)
                pos += DATA_HEADER_SIZE + nbytes
                count += 1
            # One copy per batch, not per datagram: the transport may keep what it cannot send at once.
            payload = bytes(view[:pos]) if count else b""
        finally:
            view.release()
        if count:
            if link is None:
                self.counters.drop("relay_down", count)
            else:
                link.send(payload, count)
            if count == DRAIN_MAX or pos + _DATAGRAM_ROOM > DRAIN_BUFFER:
                # More may be waiting: come back after others had their turn, not in a tight loop.
                self.loop.call_soon(self._drain, peer_id, sock)

    def send_to_peer(self, peer_id: int, datagram: bytes) -> bool:
        """Frame one datagram (a probe) to `peer_id` over its carrier (`carrier`); False when none is up."""
        link = self.carrier(peer_id)
        if link is None:
            return False
        link.send(protocol.encode_data(self.node_id if link.direct else peer_id, datagram), 1)
        return True

    def gather(self, sender: int, datagram: bytes | memoryview) -> None:
        """A datagram from `sender` via a relay: probes to the prober, the rest to WireGuard from the sender's
        socket, held in a run until `flush` (or a datagram that cannot join the run); the caller flushes
        before it changes the buffer the datagrams are views of."""
        if sender not in self._peers:
            self.counters.drop("unknown_sender")
            return
        if not datagram:  # an empty Data frame: nothing for WireGuard, and nothing to index below
            self.counters.drop("empty")
            return
        if datagram[0] == _PROBE_FIRST and is_probe(datagram):  # WireGuard's first byte is 1-4
            self.on_probe(sender, bytes(datagram))
            return
        run = self._run
        size = len(datagram)
        if run and not self._run.joins(sender, size):
            self.flush()
        run.add(sender, datagram, size)

    def flush(self) -> None:
        """Send the gathered run to WireGuard: one send of its segments (UDP GSO) when it has several."""
        run = self._run
        if not run:
            return
        sender, datagrams, segment = run.sender, run.datagrams, run.segment
        try:
            sock = self._sockets.get(sender)
            if sock is None:
                # A peer that moved to the relay before this side did: give it a socket, WireGuard roams to it.
                self.endpoint_for(sender)
                sock = self._sockets[sender]
            if len(datagrams) > 1 and self._gso:
                try:
                    sock.sendmsg(
                        datagrams, [(socket.SOL_UDP, UDP_SEGMENT, _U16.pack(segment))], 0, self.wg_addr
                    )
                    self.counters.from_relay += len(datagrams)
                    return
                except (BlockingIOError, InterruptedError):
                    self.counters.drop("wireguard_busy", len(datagrams))
                    return
                except OSError as exc:
                    if exc.errno not in _NO_GSO:
                        self.counters.drop("wireguard_unreachable", len(datagrams))
                        return
                    # A kernel without UDP GSO (before 4.18) or a socket that cannot: one send each from now.
                    self._gso = False
                    log.info(
                        "UDP segmentation offload unavailable; one send per datagram", extra=kv(error=exc)
                    )
            for datagram in datagrams:
                try:
                    sock.sendto(datagram, self.wg_addr)
                    self.counters.from_relay += 1
                except (BlockingIOError, InterruptedError):
                    self.counters.drop("wireguard_busy")
                except OSError:
                    self.counters.drop("wireguard_unreachable")
        finally:
            run.clear()

    def _retain(self, peer_ids: set[int]) -> None:
        self._peers = frozenset(peer_ids)
        with self._lock:
            gone = [p for p in self._sockets if p not in peer_ids]
            closing = [(p, self._sockets.pop(p)) for p in gone]
            for p in gone:
                self._ports.pop(p, None)
        for _, sock in closing:
            self.loop.remove_reader(sock.fileno())
            sock.close()

    def _stop(self) -> None:
        for link in self.links.values():
            link.stop()
        self.links.clear()
        self.direct.clear()  # their owner (agent/direct_tcp.py) closes them
        self._retain(set())
