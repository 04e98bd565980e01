"""Direct TCP links: WireGuard datagrams carried over TCP straight to a peer's agent, no relay in between.

Every agent listens on a TCP port (its WireGuard port's number by default) with a TLS key of its own, whose
pin the netmap gives its peers. When UDP between two gateways fails, the agent dials the peer's listener on
each of the peer's endpoint hosts in turn (agent/carrier.py says when); while that link is up, the shim
sends the peer's datagrams over it instead of the relay (`RelayShim.carrier`). The link speaks the relay
protocol (docs/relay-protocol.md, "Direct links"): the listener's hello carries a challenge, the dialer's
hello the proof of who it is (agent/direct_auth.py), then data frames naming their sender, pings, close.

Both agents may dial each other at once; of two links up between one pair, both keep the one dialed by
the lower node id (`carrier.keeps_new_link`), so they settle on one connection without talking about it.
Everything here runs on the agent's `NetLoop`; other threads call in through `*_threadsafe` and `view`.
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

from wgmesh.agent import carrier, direct_auth
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
"""From the TCP connection to the end of the hellos, the TLS handshake included (either side)."""
PING_INTERVAL = 1.0
DEAD_AFTER = 3.0
"""A link silent this long is dead (the peer's pongs stopped): its peer goes back to the relay. Shorter
than a relay link's 6 s, because here a block between two gateways (a security group closing the port)
drops packets without a reset, and every second of it is a second of lost datagrams."""
MAX_PENDING = 64
"""Inbound connections in their hellos at once; more are refused (`busy`), so connections that never
authenticate cost a bounded amount of memory."""
MAX_PENDING_PER_HOST = 8
"""… and from one address: one stranger cannot take every slot from the peers."""
HELLO_BUFFER = 2048
"""An inbound connection's read buffer until it authenticates (a hello is at most 521 bytes)."""
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
        # A stranger's connection gets a small buffer and hellos only until it authenticates.
        if target is None:
            super().__init__(owner.shim, buffer=HELLO_BUFFER, hello_first=True)
        else:
            super().__init__(owner.shim)
        self.owner = owner
        self.target = target
        self.peer_id: int | None = target.peer_id if target is not None else None
        self.dialer: int | None = owner.shim.node_id if target is not None else None
        """The node id that dialed (`carrier.keeps_new_link`); None until an inbound link authenticates."""
        self.secret: bytes | None = None
        """The pair's secret the link was authenticated with: a peer whose key changed loses the link."""
        self.rtt: float | None = None
        self.address: str | None = None
        self.host: str | None = None
        self.opened = time.monotonic()
        self.pending = False
        """An inbound connection counted against MAX_PENDING until it authenticates or goes."""
        self.was_up = False
        self.task: asyncio.Task[None] | None = None
        self._challenge: bytes | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def itself(self) -> DirectLink:
        """This link, as the protocol factory of its own connection."""
        return self

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Registered (so that it is closed at stop and forgotten when lost), then: a dialer checks the
        peer's key; a listener admits the connection and sends its challenge."""
        self.transport = cast(asyncio.Transport, transport)
        self.last_heard = time.monotonic()
        peer = self.transport.get_extra_info("peername")
        if peer:
            self.host = str(peer[0])
            self.address = f"[{peer[0]}]:{peer[1]}" if ":" in self.host else f"{peer[0]}:{peer[1]}"
        self.owner.register(self)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.set_write_buffer_limits(high=SEND_LIMIT)
        if self.target is not None:
            tls = self.transport.get_extra_info("ssl_object")
            reason = refusal(tls.getpeercert(binary_form=True) if tls is not None else None, self.target.pin)
            if reason is not None:
                self.error = f"refused: {reason.replace('relay', 'peer')}"
                self.transport.abort()
            return
        if not self.owner.admit(self):
            self._close(CloseCode.BUSY, "too many connections in their hello")
            return
        text = direct_auth.new_challenge()
        self._challenge = direct_auth.challenge_of(text)
        self._send(Hello(self.shim.node_id, text))

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the link; a dialed one is dialed again after a back-off (`DirectTcp._dial`)."""
        if self.up and self.error is None:
            self.error = f"connection lost{': ' + str(exc) if exc else ''}"
        self.up = False
        self.transport = None
        self.owner.forget(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def _data(self, peer: int, datagram: memoryview) -> None:
        # Only an authenticated link carries data (the scanner refuses it before), and only its own peer's.
        if peer != self.peer_id:
            self.shim.counters.drop("direct_wrong_sender")
            return
        self.shim.counters.from_direct += 1
        self.shim.gather(peer, datagram)

    def _control(self, frame: protocol.Frame) -> None:
        if isinstance(frame, Hello):
            self._hello(frame)
        elif isinstance(frame, Close):
            self.error = f"closed by peer: {close_code_name(frame.code)} {frame.message}".strip()
        elif isinstance(frame, HelloOk):
            self._hello_ok(frame)
        elif not self.up:
            # Only hellos (and close) before the hellos are done: a ping must not keep a stranger's slot.
            self._close(CloseCode.NOT_AUTHENTICATED, "hello first")
            self.owner.count_refusal("protocol")
        elif isinstance(frame, Ping):
            self._send(Pong(frame.token))
        elif isinstance(frame, Pong):
            self.rtt = max(time.monotonic_ns() - frame.token, 0) / 1e9

    def _hello_ok(self, frame: HelloOk) -> None:
        """The listener accepted the proof this dialer sent: up."""
        if self.target is None or self.up or self.secret is None or frame.node_id != self.shim.node_id:
            self._close(CloseCode.PROTOCOL_ERROR, "unexpected hello-ok")
            return
        self._authenticated()

    def _hello(self, frame: Hello) -> None:
        if self.target is not None:
            self._dialer_hello(frame, self.target)
        else:
            self._listener_hello(frame)

    def _dialer_hello(self, frame: Hello, target: Target) -> None:
        """The listener's challenge, answered with the proof; its hello-ok makes the link up."""
        if self.up:
            self._close(CloseCode.PROTOCOL_ERROR, "unexpected hello")
            return
        challenge = direct_auth.challenge_of(frame.ticket)
        secret = self.owner.secrets.get(target.peer_id)
        if challenge is None or frame.node_id != target.peer_id or secret is None:
            self._close(CloseCode.PROTOCOL_ERROR, "unexpected hello")
            return
        self.secret = secret
        answer = direct_auth.proof(
            secret, challenge, dialer=self.shim.node_id, listener=target.peer_id, listener_pin=target.pin
        )
        self._send(Hello(self.shim.node_id, answer))

    def _listener_hello(self, frame: Hello) -> None:
        """The dialer's proof: up, with hello-ok, or closed."""
        secret = self.owner.secrets.get(frame.node_id)
        pin = self.owner.pin
        if self._challenge is None or pin is None:
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
            # Debug only: anyone may connect, and a line per attempt would let strangers flood the log.
            log.debug(
                "direct tcp refused", extra=kv(peer=frame.node_id, address=self.address, reason="proof")
            )
            self.owner.count_refusal("proof")
            self._close(CloseCode.NOT_AUTHENTICATED, "not a peer of this node")
            return
        self.peer_id = self.dialer = frame.node_id
        self.secret = secret
        self._challenge = None
        self._send(HelloOk(frame.node_id, 0))
        self._authenticated()

    def _authenticated(self) -> None:
        self.up = self.was_up = True
        self.error = None
        self._scanner.hello_first = False
        self.owner.attach(self)
        self._send(Ping(time.monotonic_ns()))

    def _send(self, frame: protocol.Frame) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(protocol.encode(frame))

    def _close(self, code: int, message: str) -> None:
        """Say why and close; the shim stops using the link at once (a closing TLS transport drops what is
        written to it, and its shutdown may take long with a silent peer)."""
        self.up = False
        self.owner.forget_carrier(self)
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(protocol.ProtocolError):
                self.transport.write(protocol.encode(Close(code, message)))
            self.transport.close()

    def close(self, code: int = CloseCode.NORMAL, message: str = "no longer used") -> None:
        """Close this link (the peer no longer needs it, or a pair's other link won)."""
        self._close(code, message)

    def _note_error(self, error: str) -> None:
        """A protocol error in what the other end sent (FrameLink aborts the connection)."""
        self.error = error
        if not self.up and self.target is None:
            self.owner.count_refusal("protocol")

    async def keepalive(self) -> None:
        """Pings for RTT and liveness until the link is lost; a silent one, or one whose hellos are not
        done within HELLO_TIMEOUT of the connection (whatever it sent meanwhile), is aborted."""
        while not self.lost.done():
            now = time.monotonic()
            if self.transport is not None:
                if not self.up and now - self.opened > self.owner.hello_timeout:
                    self.error = f"no hello within {self.owner.hello_timeout:g} s"
                    self.transport.abort()
                    break
                if self.up and now - self.last_heard > DEAD_AFTER:
                    self.error = f"no answer for {DEAD_AFTER:g} s"
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
        self.pin: Pin | None = None
        self.port: int | None = None
        self.hello_timeout = HELLO_TIMEOUT
        self.max_pending = MAX_PENDING
        self.max_pending_per_host = MAX_PENDING_PER_HOST
        self.secrets: dict[int, bytes] = {}
        """Per peer allowed a direct link, the secret its proof is made with (direct_auth.pair_secret)."""
        self.errors: dict[int, str] = {}
        """Why the last dial round to each peer found no link."""
        self.refused: dict[str, int] = {}
        """Inbound connections refused, by reason: `proof` (no proof, a bad one, or no peer), `busy` (too
        many in their hellos), `protocol` (anything but a hello first)."""
        self._server: asyncio.AbstractServer | None = None
        self._targets: dict[int, Target] = {}
        self._dialers: dict[int, asyncio.Task[None]] = {}
        self._links: set[DirectLink] = set()
        self._pending = 0
        self._pending_by_host: dict[str, int] = {}

    # -- from other threads -----------------------------------------------------------------------

    def listen(self, port: int, identity: RelayIdentity, timeout: float = 5.0) -> bool:
        """Listen on `port` (all addresses) presenting `identity`; False, with a log line, when the port
        cannot be bound (the agent then runs without a listener and its peers use the relay)."""
        self.pin = identity.pin
        context = identity.server_context()
        try:
            self._call(self._listen(port, context), timeout)
        except OSError as exc:
            log.warning("direct tcp listener unavailable", extra=kv(port=port, error=exc))
            return False
        self.port = port
        log.info("direct tcp listening", extra=kv(port=port, pin=str(self.pin)))
        return True

    def _call(self, coro: Coroutine[Any, Any, None], timeout: float) -> None:
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
        up = isinstance(link, DirectLink) and link.up
        address = link.address if isinstance(link, DirectLink) and up else None
        rtt = link.rtt if isinstance(link, DirectLink) and up else None
        return DirectView(up, address, rtt, self.errors.get(peer_id), peer_id in self._targets)

    def links_up(self) -> int:
        """Direct links carrying a peer now."""
        return sum(1 for link in list(self.shim.direct.values()) if link.up)

    # -- on the loop -------------------------------------------------------------------------------

    async def _listen(self, port: int, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {"ssl": context, "reuse_address": True}
        # The TLS handshake happens before the link hears of the connection: its own deadline.
        options["ssl_handshake_timeout"] = self.hello_timeout
        try:  # every address of both families
            self._server = await loop.create_server(self._accepted, host=None, port=port, **options)
        except OSError:  # a host without IPv6 refuses `::`: IPv4 alone, like the underlay
            self._server = await loop.create_server(self._accepted, host="0.0.0.0", port=port, **options)

    def _accepted(self) -> DirectLink:
        # Nothing is registered before `connection_made`: a connection whose TLS handshake fails never
        # gets there, and then this object is simply dropped.
        return DirectLink(self, None)

    def register(self, link: DirectLink) -> None:
        """A connection made: closed at stop, its keepalive (liveness and the hello deadline) running."""
        self._links.add(link)
        link.task = self.loop.create_task(link.keepalive())

    def admit(self, link: DirectLink) -> bool:
        """Whether an inbound connection may start its hellos (MAX_PENDING in all and per address)."""
        host = link.host or ""
        if (
            self._pending >= self.max_pending
            or self._pending_by_host.get(host, 0) >= self.max_pending_per_host
        ):
            self.count_refusal("busy")
            return False
        self._pending += 1
        self._pending_by_host[host] = self._pending_by_host.get(host, 0) + 1
        link.pending = True
        return True

    def _unpend(self, link: DirectLink) -> None:
        if link.pending:
            link.pending = False
            self._pending -= 1
            host = link.host or ""
            left = self._pending_by_host.get(host, 1) - 1
            if left:
                self._pending_by_host[host] = left
            else:
                self._pending_by_host.pop(host, None)

    def count_refusal(self, reason: str) -> None:
        """Count an inbound connection refused (`refused`; the agent's metrics export it)."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def attach(self, link: DirectLink) -> None:
        """An authenticated link: the peer's carrier, unless the pair's other link wins."""
        self._unpend(link)
        assert link.peer_id is not None and link.dialer is not None
        peer_id = link.peer_id
        current = self.shim.direct.get(peer_id)
        if isinstance(current, DirectLink) and current is not link and current.up:
            assert current.dialer is not None
            if not carrier.keeps_new_link(current.dialer, link.dialer):
                link.close(CloseCode.REPLACED, "the pair's other link is kept")
                return
            current.close(CloseCode.REPLACED, "the pair's other link is kept")
        self.shim.direct[peer_id] = link
        self.errors.pop(peer_id, None)
        log.info(
            "direct tcp up", extra=kv(peer=peer_id, address=link.address, dialed=link.target is not None)
        )

    def forget_carrier(self, link: DirectLink) -> None:
        """The link no longer carries its peer (closing or gone): the shim falls back to the relay."""
        if link.peer_id is not None and self.shim.direct.get(link.peer_id) is link:
            del self.shim.direct[link.peer_id]
            log.info("direct tcp down", extra=kv(peer=link.peer_id, error=link.error))

    def forget(self, link: DirectLink) -> None:
        """A connection gone: its slot, its place as a carrier, its keepalive."""
        self._unpend(link)
        self.forget_carrier(link)
        self._links.discard(link)

    def _follow(self, secrets: dict[int, bytes]) -> None:
        self.secrets = secrets
        for link in list(self._links):
            # A peer that left, lost P2P, or changed its key: its link was authenticated for what was.
            if link.up and link.peer_id is not None and secrets.get(link.peer_id) != link.secret:
                link.close(CloseCode.NOT_AUTHENTICATED, "no longer this node's peer")

    def _want(self, targets: dict[int, Target]) -> None:
        for peer_id in [p for p in self._targets if p not in targets]:
            self._unwant(peer_id)
        for peer_id, target in targets.items():
            before = self._targets.get(peer_id)
            if before is not None and (before.port, before.pin) == (target.port, target.pin):
                self._targets[peer_id] = target  # other hosts: the next round dials them, the link stays
                continue
            if before is not None:
                self._unwant(peer_id)
            self._targets[peer_id] = target
            self._dialers[peer_id] = self.loop.create_task(self._dial(peer_id))

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

    async def _dial(self, peer_id: int) -> None:
        """Keep one link to the peer up while it is wanted: each host in turn, then a back-off. A round
        that fails in a way nobody foresaw is logged and retried, never the end of dialing the peer."""
        backoff = Backoff(initial=RETRY_INITIAL, maximum=RETRY_MAX)
        while (target := self._targets.get(peer_id)) is not None:
            try:
                if await self._round(target):
                    backoff.reset()  # it worked: the next try is soon; refusals and silence back off
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("direct tcp dial failed", extra=kv(peer=peer_id))
            await asyncio.sleep(backoff.next_delay())

    async def _round(self, target: Target) -> bool:
        """One round: nothing while a link carries the pair (the peer's own, maybe), else each host in turn
        until one link is up and lost again; whether a link was up. One error per round for status."""
        current = self.shim.direct.get(target.peer_id)
        if (current is not None and current.up) or target.peer_id not in self.secrets:
            await asyncio.sleep(PING_INTERVAL)
            return True
        context = pinned_client_context()  # the key is checked against the pin in connection_made
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        for host in target.hosts:
            link = DirectLink(self, target)
            try:
                await asyncio.wait_for(
                    loop.create_connection(link.itself, host, target.port, ssl=context),
                    timeout=CONNECT_TIMEOUT,
                )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                errors.append(f"connect {host}:{target.port}: {str(exc) or 'timed out'}")
                continue
            await link.keepalive()
            if link.was_up:
                return True
            errors.append(link.error or f"{host}:{target.port}: closed before its hellos")
        error = "; ".join(errors)
        if error != self.errors.get(target.peer_id):
            log.info("direct tcp unavailable", extra=kv(peer=target.peer_id, error=error))
        self.errors[target.peer_id] = error
        return False

    def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for peer_id in list(self._targets):
            self._unwant(peer_id)
        for link in list(self._links):
            link.close(CloseCode.GOING_AWAY, "agent stopping")
            if link.task is not None:
                link.task.cancel()
