"""Probes that measure each path to a peer: ping/pong RTT and short load bursts, direct or via the relay.

The prober owns the agent's probe socket (WireGuard port + 1) and answers its peers' probes; it sends its
own straight to a peer's probe port (the direct path) or inside relay frames (the relay path, answered by
the peer's shim handing the probe to its prober). Results feed `paths.decide`. Runs on the `NetLoop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from wgmesh.agent import probe_wire
from wgmesh.agent.probe_wire import Burst, Ping, Pong, ProbeFormatError, Report
from wgmesh.logs import kv
from wgmesh.values import Endpoint

log = logging.getLogger("wgmesh.agent.prober")

T = TypeVar("T")
Address = tuple[str, int]
RELAY = "relay"
Via = Address | str
"""Where a probe goes: a peer's probe address, or RELAY."""

BURST_COUNT = 400
BURST_SIZE = 1200
BURST_SECONDS = 0.1
"""A burst offers 400 packets of 1,200 B in 100 ms (≈ 38 Mbit/s): enough to tell a throttled path from a working one
without loading a healthy path for long."""
REPORT_AFTER = 0.4
"""The receiver reports a burst this long after its first packet (pacing plus queueing plus slack)."""


@dataclass(frozen=True, slots=True)
class BurstResult:
    """What a load burst achieved: the share lost, and the goodput the receiver saw (bit/s)."""

    sent: int
    received: int
    goodput: float

    @property
    def loss(self) -> float:
        """Share of the burst that did not arrive."""
        return 1.0 - self.received / self.sent if self.sent else 0.0


@dataclass(frozen=True, slots=True)
class _Outstanding:
    """A probe waiting for its answer: only an answer from the peer it went to, over the path it took,
    with its token, counts; so a recorded answer replayed later, or one carried over another path, never
    makes a dead path look alive."""

    peer: int
    via: Via
    sent: float


@dataclass
class _Incoming:
    first: float
    last: float
    received: int
    nbytes: int
    count: int


class Prober:
    """Answers peers' probes and measures paths to them; `keys` maps peer node id to the pair's MAC key."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        node_id: int,
        port: int,
        send_via_relay: Callable[[int, bytes], bool],
        relays_peer: Callable[[int], bool] = lambda _peer: False,
    ) -> None:
        self.loop = loop
        self.relays_peer = relays_peer
        self.peer_relays: dict[int, tuple[bool, float]] = {}
        """Per peer: whether it said it relays this pair, and when (monotonic) it last said so. Taken from
        answers to our own pings only: a ping can be a replay, and an old "direct" would make the agent
        undo a roam onto the shim towards a peer that relays."""
        self.unmatched = 0
        """Answers dropped because they matched no outstanding probe (replays, late or misrouted answers)."""
        self.node_id = node_id
        self.port = port
        self.send_via_relay = send_via_relay
        self.keys: Mapping[int, bytes] = {}
        self.sock: socket.socket | None = None
        self._pings: dict[int, tuple[asyncio.Future[float], _Outstanding]] = {}
        self._reports: dict[int, tuple[asyncio.Future[Report], _Outstanding]] = {}
        self._incoming: dict[tuple[int, int], _Incoming] = {}

    # -- setup ------------------------------------------------------------------------------------

    def open(self) -> None:
        """Bind the probe port on every address (on the loop thread)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 * 1024 * 1024)
        sock.bind(("0.0.0.0", self.port))  # peers probe the public and eth0 addresses
        sock.setblocking(False)
        self.sock = sock
        self.loop.add_reader(sock.fileno(), self._drain)

    def close(self) -> None:
        """Stop answering and measuring."""
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    # -- receiving --------------------------------------------------------------------------------

    def _drain(self) -> None:
        assert self.sock is not None
        for _ in range(1024):
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._handle(data, addr)

    def handle_from_relay(self, sender: int, data: bytes) -> None:
        """A probe that came through a relay from `sender` (the relay vouches for the sender id)."""
        self._handle(data, RELAY, relay_sender=sender)

    def _handle(self, data: bytes, via: Via, relay_sender: int | None = None) -> None:
        try:
            sender = probe_wire.peek_sender(data)
            key = self.keys.get(sender)
            if key is None or (relay_sender is not None and relay_sender != sender):
                return
            message = probe_wire.decode(data, key)
        except ProbeFormatError:
            return
        now = time.monotonic()
        match message:
            case Ping(token=token):
                pong = Pong(self.node_id, token, self.relays_peer(sender))
                self._send(sender, probe_wire.encode(pong, key), via)
            case Pong(token=token, relayed=relayed):
                ping = self._answered(self._pings, token, sender, via)
                if ping is not None:
                    self.peer_relays[sender] = (relayed, now)
                    ping[0].set_result(now - ping[1].sent)
            case Burst(token=token, count=count, size=size):
                record = self._incoming.get((sender, token))
                if record is None:
                    if len(self._incoming) > 256:  # bursts are rare; a flood of new ids is not
                        return
                    record = _Incoming(now, now, 0, 0, count)
                    self._incoming[(sender, token)] = record
                    self.loop.call_later(REPORT_AFTER, self._report, sender, token, via)
                record.last = now
                record.received += 1
                record.nbytes += size
            case Report(token=token):
                burst = self._answered(self._reports, token, sender, via)
                if burst is not None:
                    burst[0].set_result(message)

    def _answered(
        self, waiting: dict[int, tuple[asyncio.Future[T], _Outstanding]], token: int, sender: int, via: Via
    ) -> tuple[asyncio.Future[T], _Outstanding] | None:
        """The outstanding probe this answer is for, taken off the list; None (counted) when there is none."""
        found = waiting.get(token)
        if found is None or found[0].done() or found[1].peer != sender or found[1].via != via:
            self.unmatched += 1
            return None
        del waiting[token]
        return found

    def _report(self, sender: int, token: int, via: Via) -> None:
        record = self._incoming.pop((sender, token), None)
        key = self.keys.get(sender)
        if record is None or key is None:
            return
        span = int((record.last - record.first) * 1e6)
        report = Report(self.node_id, token, record.received, record.count, record.nbytes, span)
        self._send(sender, probe_wire.encode(report, key), via)

    def _send(self, peer_id: int, datagram: bytes, via: Via) -> bool:
        if via == RELAY:
            return self.send_via_relay(peer_id, datagram)
        if self.sock is None:
            return False
        assert isinstance(via, tuple)
        try:
            self.sock.sendto(datagram, via)
        except OSError:
            # Blocked UDP shows up here as EPERM (a local drop rule) or as silence; both are a failed probe.
            return False
        return True

    # -- measuring (coroutines on the loop) ---------------------------------------------------------

    async def ping(self, peer_id: int, via: Via, timeout: float) -> float | None:
        """The RTT of one ping to `peer_id` over `via`, or None when no pong came within `timeout`."""
        key = self.keys.get(peer_id)
        if key is None:
            return None
        token = secrets.randbits(64)
        future: asyncio.Future[float] = self.loop.create_future()
        self._pings[token] = (future, _Outstanding(peer_id, via, time.monotonic()))
        try:
            ping = Ping(self.node_id, token, self.relays_peer(peer_id))
            if not self._send(peer_id, probe_wire.encode(ping, key), via):
                return None
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self._pings.pop(token, None)

    async def burst(self, peer_id: int, via: Via, timeout: float = 2.0) -> BurstResult | None:
        """Offer a short paced burst to the peer over `via`; None if the peer never reported."""
        key = self.keys.get(peer_id)
        if key is None:
            return None
        token = secrets.randbits(64)
        future: asyncio.Future[Report] = self.loop.create_future()
        self._reports[token] = (future, _Outstanding(peer_id, via, time.monotonic()))
        steps = 10
        per_step = BURST_COUNT // steps
        sent = 0
        try:
            for step in range(steps):
                for i in range(per_step):
                    seq = step * per_step + i
                    packet = probe_wire.encode(Burst(self.node_id, token, seq, BURST_COUNT, BURST_SIZE), key)
                    if self._send(peer_id, packet, via):
                        sent += 1
                await asyncio.sleep(BURST_SECONDS / steps)
            report = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self._reports.pop(token, None)
        seconds = max(report.span_us / 1e6, BURST_SECONDS)
        result = BurstResult(
            BURST_COUNT, min(report.received, BURST_COUNT), report.received_bytes * 8 / seconds
        )
        log.debug(
            "burst measured",
            extra=kv(
                peer=peer_id,
                via=via if isinstance(via, str) else str(Endpoint(*via)),
                sent=sent,
                received=result.received,
                mbit=round(result.goodput / 1e6, 1),
            ),
        )
        return result
