"""Direct TCP links: WireGuard datagrams carried over TCP straight to a peer's agent, no relay in between.

Every agent listens on a TCP port (its WireGuard port by default) with a TLS key of its own, whose pin the
netmap gives its peers. When UDP between two gateways fails, the agent dials the peer's listener on each
of the peer's endpoint hosts in turn (agent/carrier.py says when); while that link is up, the shim sends
the peer's datagrams over it instead of the relay (`RelayShim.carrier`). The link speaks the relay
protocol (docs/relay-protocol.md, "Direct links"): the listener's hello carries a challenge, the dialer's
hello the proof of who it is (agent/direct_auth.py), then data frames naming their sender, pings, close.

Both agents may dial each other at once; of two links up between one pair, both keep the one dialed by
the lower node id, so they settle on the same connection without talking about it.
Everything here runs on the agent's `NetLoop`; other threads call in through `*_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, cast

from wgmesh.agent import direct_auth
from wgmesh.agent.backoff import Backoff
from wgmesh.agent.shim import SEND_LIMIT, FrameLink, RelayShim
from wgmesh.logs import kv
from wgmesh.pins import Pin
from wgmesh.relay import protocol
from wgmesh.relay.identity import RelayIdentity, pinned_client_context, refusal
from wgmesh.relay.protocol import Close, CloseCode, Hello, HelloOk, Ping, Pong, close_code_name

log = logging.getLogger("wgmesh.agent.direct")

CONNECT_TIMEOUT = 3.0
"""One dial of one host; a blocked port (packets dropped) costs this before the next host is tried."""
HELLO_TIMEOUT = 10.0
"""A connection that has not finished its hellos by then is closed (on either side)."""
MAX_PENDING = 64
"""Inbound connections still in their hellos at once; more are closed at once, so a flood of connections
that never authenticate costs a bounded amount of memory."""
PING_INTERVAL = 1.0
DEAD_AFTER = 3.0
"""A link silent this long is dead (the peer's pongs stopped): its peer goes back to the relay. Shorter
than a relay link's 6 s, because here a block between two gateways (a security group closing the port)
drops packets without a reset, and every second of it is a second of lost datagrams."""
RETRY_INITIAL = 1.0
RETRY_MAX = 30.0
"""Redial back-off: a peer whose listener cannot be reached is tried again at most this seldom."""


@dataclass(frozen=True)
class Target:
    """A peer's listener as the netmap gives it."""

    peer_id: int
    hosts: tuple[str, ...]
    port: int
    pin: Pin


@dataclass(frozen=True)
class DirectView:
    """A peer's direct TCP state for status: up, the address of the link, its RTT, its last error."""

    up: bool
    address: str | None
    rtt: float | None
    error: str | None
    dialing: bool


class DirectLink(FrameLink):
    """One direct TCP connection to one peer's agent, dialed by this agent (`target` set) or accepted."""

    direct = True

    def __init__(self, owner: DirectTcp, target: Target | None) -> None:
        super().__init__(owner.shim)
        self.owner = owner
        self.target = target
        self.peer_id: int | None = target.peer_id if target is not None else None
        self.dialer = owner.shim.node_id if target is not None else 0
        """The node id that dialed (the lower one's link wins when a pair has two)."""
        self.rtt: float | None = None
        self.address: str | None = None
        self.pending = False
        """An inbound connection counted against MAX_PENDING until it authenticates or goes."""
        self.was_up = False
        self._challenge: bytes | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def itself(self) -> DirectLink:
        """This link, as the protocol factory of its own connection."""
        return self

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A dialer checks the peer's key first; a listener sends its challenge."""
        self.transport = cast(asyncio.Transport, transport)
        self.last_heard = time.monotonic()
        peer = self.transport.get_extra_info("peername")
        if peer:
            host, port = peer[0], peer[1]
            self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.set_write_buffer_limits(high=SEND_LIMIT)
        if self.target is not None:
            tls = self.transport.get_extra_info("ssl_object")
            reason = refusal(tls.getpeercert(binary_form=True) if tls is not None else None, self.target.pin)
            if reason is not None:
                self._note_error(f"refused: {reason.replace('relay', 'peer')}")
                self.transport.abort()
            return
        if not self.owner.admit(self):
            self._close(CloseCode.BUSY, "too many connections in their hello")
            return
        text = direct_auth.new_challenge()
        self._challenge = direct_auth.challenge_of(text)
        self.transport.write(protocol.encode(Hello(self.shim.node_id, text)))

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the link; a dialed one is dialed again after a back-off (`DirectTcp._dial`)."""
        self.up = False
        self.transport = None
        self.owner.detach(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def _data(self, peer: int, datagram: memoryview) -> None:
        # Only an authenticated link carries data, and only its own peer's.
        if not self.up or peer != self.peer_id:
            self.shim.counters.drop("direct_wrong_sender")
            return
        self.shim.gather(peer, datagram)

    def _control(self, frame: protocol.Frame) -> None:
        if isinstance(frame, Ping):
            if self.transport is not None:
                self.transport.write(protocol.encode(Pong(frame.token)))
        elif isinstance(frame, Pong):
            self.rtt = max(time.monotonic_ns() - frame.token, 0) / 1e9
        elif isinstance(frame, Hello):
            self._hello(frame)
        elif isinstance(frame, HelloOk):
            if self.target is None or self.up or frame.node_id != self.shim.node_id:
                self._close(CloseCode.PROTOCOL_ERROR, "unexpected hello-ok")
                return
            self._authenticated()
        elif isinstance(frame, Close):
            self._note_error(f"closed by peer: {close_code_name(frame.code)} {frame.message}".strip())

    def _hello(self, frame: Hello) -> None:
        if self.target is not None:  # dialer: the listener's challenge
            challenge = direct_auth.challenge_of(frame.ticket)
            secret = self.owner.secrets.get(self.target.peer_id)
            if self.up or challenge is None or frame.node_id != self.target.peer_id or secret is None:
                self._close(CloseCode.PROTOCOL_ERROR, "unexpected hello")
                return
            answer = direct_auth.proof(
                secret,
                challenge,
                dialer=self.shim.node_id,
                listener=self.target.peer_id,
                listener_pin=self.target.pin,
            )
            self._send(Hello(self.shim.node_id, answer))
            return
        # Listener: the dialer's proof.
        secret = self.owner.secrets.get(frame.node_id)
        pin = self.owner.pin
        if self.up or self._challenge is None or pin is None:
            self._close(CloseCode.PROTOCOL_ERROR, "unexpected hello")
            return
        if secret is None or not direct_auth.proves(
            frame.ticket,
            secret,
            self._challenge,
            dialer=frame.node_id,
            listener=self.shim.node_id,
            listener_pin=pin,
        ):
            self.owner.refused += 1
            log.warning(
                "direct tcp refused", extra=kv(peer=frame.node_id, address=self.address, reason="proof")
            )
            self._close(CloseCode.NOT_AUTHENTICATED, "not a peer of this node")
            return
        self.peer_id = frame.node_id
        self.dialer = frame.node_id
        self._challenge = None
        self._send(HelloOk(frame.node_id, 0))
        self._authenticated()

    def _authenticated(self) -> None:
        self.up = self.was_up = True
        self.error = None
        self.owner.attach(self)
        self._send(Ping(time.monotonic_ns()))

    def _send(self, frame: protocol.Frame) -> None:
        if self.transport is not None:
            self.transport.write(protocol.encode(frame))

    def _close(self, code: int, message: str) -> None:
        if self.transport is not None:
            with contextlib.suppress(protocol.ProtocolError):
                self.transport.write(protocol.encode(Close(code, message)))
            self.transport.close()

    def _note_error(self, error: str) -> None:
        if error != self.error and self.target is not None:
            log.info("direct tcp unavailable", extra=kv(peer=self.target.peer_id, error=error))
        self.error = error
        if self.target is not None:
            self.owner.errors[self.target.peer_id] = error

    def close(self, code: int = CloseCode.NORMAL, message: str = "no longer used") -> None:
        """Close this link (the peer no longer needs it, or a pair's other link won)."""
        self._close(code, message)

    async def keepalive(self) -> None:
        """Pings for RTT and liveness until the link is lost; a silent one is aborted."""
        while not self.lost.done():
            now = time.monotonic()
            if self.transport is not None:
                limit = DEAD_AFTER if self.up else HELLO_TIMEOUT
                if now - self.last_heard > limit:
                    self._note_error(
                        f"no answer for {limit:g} s" if self.up else f"no hello within {limit:g} s"
                    )
                    self.transport.abort()
                    break
                if self.up:
                    self._send(Ping(time.monotonic_ns()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.lost), PING_INTERVAL)


class DirectTcp:
    """This agent's listener and its direct links, dialed and accepted."""

    def __init__(self, shim: RelayShim) -> None:
        self.shim = shim
        self.loop = shim.loop
        self.identity: RelayIdentity | None = None
        self.pin: Pin | None = None
        self.port: int | None = None
        self.secrets: dict[int, bytes] = {}
        """Per peer allowed a direct link, the secret its proof is made with (direct_auth.pair_secret)."""
        self.errors: dict[int, str] = {}
        """The last error of dialing each peer."""
        self.refused = 0
        """Inbound connections refused: no proof, a bad one, or from a node that is no peer."""
        self._server: asyncio.AbstractServer | None = None
        self._targets: dict[int, Target] = {}
        self._dialers: dict[int, asyncio.Task[None]] = {}
        self._links: set[DirectLink] = set()
        self._pending = 0

    # -- from other threads -----------------------------------------------------------------------

    def listen(self, port: int, identity: RelayIdentity, timeout: float = 5.0) -> bool:
        """Listen on `port` (all addresses) presenting `identity`; False, with a log line, when the port
        cannot be bound (the agent then runs without a listener and its peers use the relay)."""
        self.identity, self.pin = identity, identity.pin
        context = identity.server_context()
        try:
            self.shim_call(self._listen(port, context), timeout)
        except OSError as exc:
            log.warning("direct tcp listener unavailable", extra=kv(port=port, error=exc))
            return False
        self.port = port
        log.info("direct tcp listening", extra=kv(port=port, pin=str(self.pin)))
        return True

    def shim_call(self, coro: Coroutine[Any, Any, None], timeout: float) -> None:
        """Run a coroutine on the loop and wait for it (its exception raised here)."""
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def follow_threadsafe(self, secrets: dict[int, bytes]) -> None:
        """The peers allowed a direct link now, with their secrets; links of others are closed."""
        self.loop.call_soon_threadsafe(self._follow, secrets)

    def want_threadsafe(self, targets: dict[int, Target]) -> None:
        """Dial these peers (and keep redialing them); stop dialing the others."""
        self.loop.call_soon_threadsafe(self._want, targets)

    def stop_threadsafe(self) -> None:
        """Close the listener and every link."""
        self.loop.call_soon_threadsafe(self._stop)

    def view(self, peer_id: int) -> DirectView:
        """The peer's direct TCP state (any thread: reads of values the loop replaces whole)."""
        link = self.shim.direct.get(peer_id)
        up = link is not None and link.up
        address = link.address if isinstance(link, DirectLink) and up else None
        rtt = link.rtt if isinstance(link, DirectLink) and up else None
        return DirectView(up, address, rtt, self.errors.get(peer_id), peer_id in self._targets)

    # -- on the loop -------------------------------------------------------------------------------

    async def _listen(self, port: int, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:  # every address of both families
            self._server = await loop.create_server(
                self._accepted, host=None, port=port, ssl=context, reuse_address=True
            )
        except OSError:  # a host without IPv6 refuses `::`: IPv4 alone, like the underlay
            self._server = await loop.create_server(
                self._accepted, host="0.0.0.0", port=port, ssl=context, reuse_address=True
            )

    def _accepted(self) -> DirectLink:
        link = DirectLink(self, None)
        self._links.add(link)
        self.loop.create_task(link.keepalive())
        return link

    def admit(self, link: DirectLink) -> bool:
        """Whether an inbound connection may start its hellos (at most MAX_PENDING at once)."""
        if self._pending >= MAX_PENDING:
            self.refused += 1
            return False
        self._pending += 1
        link.pending = True
        return True

    def _unpend(self, link: DirectLink) -> None:
        if link.pending:
            link.pending = False
            self._pending -= 1

    def attach(self, link: DirectLink) -> None:
        """An authenticated link: the peer's carrier, unless the pair's other link wins."""
        self._unpend(link)
        assert link.peer_id is not None
        peer_id = link.peer_id
        current = self.shim.direct.get(peer_id)
        if current is not None and current is not link and current.up:
            assert isinstance(current, DirectLink)
            # Both ends keep the link dialed by the lower node id; a redial by the same node replaces.
            if link.dialer > current.dialer:
                link.close(CloseCode.REPLACED, "the pair's other link is kept")
                return
            current.close(CloseCode.REPLACED, "the pair's other link is kept")
        self.shim.direct[peer_id] = link
        self.errors.pop(peer_id, None)
        log.info(
            "direct tcp up", extra=kv(peer=peer_id, address=link.address, dialed=link.target is not None)
        )

    def detach(self, link: DirectLink) -> None:
        """A link went: forget it (the shim falls back to the relay for its peer)."""
        self._unpend(link)
        self._links.discard(link)
        if link.peer_id is not None and self.shim.direct.get(link.peer_id) is link:
            del self.shim.direct[link.peer_id]
            log.info("direct tcp down", extra=kv(peer=link.peer_id, error=link.error))

    def _follow(self, secrets: dict[int, bytes]) -> None:
        self.secrets = secrets
        for link in list(self._links):
            if link.peer_id is not None and link.up and link.peer_id not in secrets:
                link.close(CloseCode.NOT_AUTHENTICATED, "no longer a peer")
        for peer_id in [p for p in self._targets if p not in secrets]:
            self._unwant(peer_id)

    def _want(self, targets: dict[int, Target]) -> None:
        for peer_id in [p for p in self._targets if p not in targets]:
            self._unwant(peer_id)
        for peer_id, target in targets.items():
            if self._targets.get(peer_id) != target:
                self._unwant(peer_id)
                self._targets[peer_id] = target
                self._dialers[peer_id] = self.loop.create_task(self._dial(target))

    def _unwant(self, peer_id: int) -> None:
        self._targets.pop(peer_id, None)
        self.errors.pop(peer_id, None)
        task = self._dialers.pop(peer_id, None)
        if task is not None:
            task.cancel()
        for link in list(self._links):
            # Only this side's own dial: a link the peer dialed stays while the peer wants it.
            if link.target is not None and link.target.peer_id == peer_id:
                link.close()

    async def _dial(self, target: Target) -> None:
        """Keep one link to the peer up while it is wanted: each host in turn, then a back-off."""
        backoff = Backoff(initial=RETRY_INITIAL, maximum=RETRY_MAX)
        context = pinned_client_context()  # the key is checked against the pin in connection_made
        loop = asyncio.get_running_loop()
        while True:
            current = self.shim.direct.get(target.peer_id)
            if current is not None and current.up:
                # The peer's own link (it dialed us) carries the pair: wait until it goes.
                await asyncio.sleep(PING_INTERVAL)
                continue
            link: DirectLink | None = None
            for host in target.hosts:
                candidate = DirectLink(self, target)
                try:
                    await asyncio.wait_for(
                        loop.create_connection(candidate.itself, host, target.port, ssl=context),
                        timeout=CONNECT_TIMEOUT,
                    )
                except (OSError, TimeoutError, ssl.SSLError) as exc:
                    candidate._note_error(f"connect {host}:{target.port}: {str(exc) or 'timed out'}")
                    continue
                link = candidate
                self._links.add(link)
                break
            if link is not None:
                await link.keepalive()
                if link.was_up:  # it worked: the next try is soon; refusals and silence back off
                    backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for peer_id in list(self._targets):
            self._unwant(peer_id)
        for link in list(self._links):
            link.close(CloseCode.GOING_AWAY, "agent stopping")
