"""Direct TCP links between two agents' shims on loopback, with no relay at all (agent/direct_tcp.py).

Each side's "WireGuard" is a plain UDP socket, as in test_shim.py; the listener and the dialer are the real
ones, over TLS with the listener's key pinned, and the dialer proves who it is with the pair's secret.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
from relay_harness import wait_until

from wgmesh import keys
from wgmesh.agent import direct_auth
from wgmesh.agent.direct_tcp import DirectTcp, Target
from wgmesh.agent.netloop import NetLoop
from wgmesh.agent.shim import RelayShim
from wgmesh.lab.timescale import scaled
from wgmesh.relay.identity import RelayIdentity, generate_key, pinned_client_context
from wgmesh.relay.protocol import Close, CloseCode, Data, Frame, FrameDecoder, Hello, Ping, Pong, encode


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Agent:
    node_id: int
    net: NetLoop
    shim: RelayShim
    direct: DirectTcp
    wg: socket.socket
    keypair: keys.KeyPair
    identity: RelayIdentity
    port: int

    def recv(self, timeout: float = 3.0) -> tuple[bytes, tuple[str, int]]:
        self.wg.settimeout(scaled(timeout))
        data, addr = self.wg.recvfrom(65535)
        return data, addr

    def shim_address(self, peer: int) -> tuple[str, int]:
        return self.shim.endpoint_for(peer).address

    def target(self) -> Target:
        """This agent's listener as a peer's netmap gives it."""
        return Target(self.node_id, ("127.0.0.1",), self.port, self.identity.pin)

    def trust(self, *peers: Agent) -> None:
        """The netmap's peers: frames from these, with their secrets for direct links."""
        self.shim.retain_threadsafe({p.node_id for p in peers})
        self.direct.follow_threadsafe(
            {
                p.node_id: direct_auth.pair_secret(self.keypair.private_key, p.keypair.public_key)
                for p in peers
            }
        )

    def up_with(self, peer: int) -> bool:
        link = self.shim.direct.get(peer)
        return link is not None and link.up


def make_agent(node_id: int, stack: ExitStack) -> Agent:
    wg = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wg.bind(("127.0.0.1", 0))
    stack.callback(wg.close)
    net = NetLoop()
    shim = RelayShim(net.loop, node_id, wg.getsockname()[1], lambda sender, data: None)
    direct = DirectTcp(shim)
    net.start()
    stack.callback(net.stop)
    stack.callback(lambda: net.call(shim._stop))
    stack.callback(lambda: net.call(direct._stop))
    identity = RelayIdentity.from_key(generate_key())
    port = free_tcp_port()
    assert direct.listen(port, identity)
    return Agent(node_id, net, shim, direct, wg, keys.generate_keypair(), identity, port)


def linked(a: Agent, b: Agent) -> None:
    """Each in the other's netmap, A dialing B's listener, until the link is up on both ends."""
    a.trust(b)
    b.trust(a)
    a.direct.want_threadsafe({b.node_id: b.target()})
    wait_until(lambda: a.up_with(b.node_id) and b.up_with(a.node_id), 10, "the direct link up on both ends")


@pytest.fixture
def agents() -> Iterator[tuple[Agent, Agent, Agent]]:
    with ExitStack() as stack:
        yield make_agent(1, stack), make_agent(2, stack), make_agent(3, stack)


def test_datagrams_cross_a_direct_link_with_no_relay(agents: tuple[Agent, Agent, Agent]) -> None:
    a, b, _ = agents
    linked(a, b)
    assert a.shim.active() is None  # no relay anywhere
    a.wg.sendto(b"\x01\x00\x00\x00handshake", a.shim_address(2))
    data, source = b.recv()
    assert data == b"\x01\x00\x00\x00handshake"
    assert source == b.shim_address(1)  # from B's shim socket for A, as a relay delivers it
    b.wg.sendto(b"\x02\x00\x00\x00response", source)
    data, source = a.recv()
    assert (data, source) == (b"\x02\x00\x00\x00response", a.shim_address(2))
    assert a.direct.view(2).up and a.direct.view(2).address == f"127.0.0.1:{b.port}"
    assert a.shim.counters.to_direct >= 1 and b.shim.counters.to_direct >= 1


def test_a_burst_keeps_its_order_and_count(agents: tuple[Agent, Agent, Agent]) -> None:
    a, b, _ = agents
    linked(a, b)
    b.wg.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sent = [bytes([4]) + i.to_bytes(4, "big") + bytes(1395) for i in range(500)]
    for datagram in sent:
        a.wg.sendto(datagram, a.shim_address(2))
    got = [b.recv()[0] for _ in sent]
    assert got == sent


def test_both_dialing_settle_on_the_link_the_lower_id_dialed(agents: tuple[Agent, Agent, Agent]) -> None:
    a, b, _ = agents
    a.trust(b)
    b.trust(a)
    a.direct.want_threadsafe({2: b.target()})
    b.direct.want_threadsafe({1: a.target()})
    wait_until(lambda: a.up_with(2) and b.up_with(1), 10, "a link is up")
    wait_until(
        lambda: a.shim.direct[2].dialer == 1 and b.shim.direct[1].dialer == 1,  # type: ignore[attr-defined]
        10,
        "both ends keep the link node 1 dialed",
    )
    a.wg.sendto(b"\x01\x00\x00\x00one", a.shim_address(2))
    assert b.recv()[0] == b"\x01\x00\x00\x00one"


class RecordingListener:
    """A TLS server with its own key on loopback that records every byte a client sends after the
    handshake (what a dialer must not send to a listener holding another key than the pin)."""

    def __init__(self, identity: RelayIdentity) -> None:
        self.context = identity.server_context()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.received = bytearray()
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            with raw:
                raw.settimeout(scaled(5))
                try:
                    with self.context.wrap_socket(raw, server_side=True) as tls:
                        while chunk := tls.recv(4096):
                            self.received += chunk
                except (OSError, ssl.SSLError):
                    continue

    def close(self) -> None:
        self.server.close()
        self._thread.join(scaled(10))


def test_a_listener_with_another_key_is_refused_before_anything_is_sent(
    agents: tuple[Agent, Agent, Agent],
) -> None:
    a, b, c = agents
    a.trust(b)
    impostor = RecordingListener(c.identity)  # where B should be, C's key
    try:
        a.direct.want_threadsafe({2: Target(2, ("127.0.0.1",), impostor.port, b.identity.pin)})
        wait_until(lambda: (a.direct.view(2).error or "").startswith("refused"), 10, "the dialer refuses")
        assert "the netmap pins" in (a.direct.view(2).error or "")
        wait_until(lambda: impostor.connections >= 2, 20, "a second refused attempt (the dialer retries)")
        assert bytes(impostor.received) == b""  # not even its node id
        assert not a.up_with(2)
        # Refused attempts leave no link behind (each used to stay in the owner's set).
        assert a.net.call(lambda: len(a.direct._links)) <= 1
    finally:
        impostor.close()


def test_a_node_that_is_not_a_peer_is_refused(agents: tuple[Agent, Agent, Agent]) -> None:
    a, b, c = agents
    b.trust(a)  # B's netmap lists A only
    c.trust(b)
    c.direct.want_threadsafe({2: b.target()})
    wait_until(lambda: "not_authenticated" in (c.direct.view(2).error or ""), 10, "C told it is refused")
    assert b.direct.refused.get("proof", 0) >= 1
    assert not b.up_with(3) and not c.up_with(2)


def tls_to(port: int) -> ssl.SSLSocket:
    """A raw client's TLS connection to a listener (the pin is not checked: this client is the stranger)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    return pinned_client_context().wrap_socket(raw)


def frames_until_closed(tls: ssl.SSLSocket, decoder: FrameDecoder) -> list[Frame]:
    """Every frame the listener sends until it closes the connection."""
    out: list[Frame] = []
    while True:
        try:
            chunk = tls.recv(4096)
        except (ConnectionResetError, ssl.SSLError):
            return out
        if not chunk:
            return out
        out += decoder.feed(chunk)


def challenge_from(tls: ssl.SSLSocket, decoder: FrameDecoder) -> Hello:
    frames: list[Frame] = []
    while not frames:
        frames = decoder.feed(tls.recv(4096))
    hello = frames[0]
    assert isinstance(hello, Hello)
    return hello


def test_a_proof_made_with_another_secret_is_refused(agents: tuple[Agent, Agent, Agent]) -> None:
    a, b, c = agents
    b.trust(a)
    # C claims to be node 1 (A) and answers B's challenge, but it cannot make A's secret with B.
    proof_key = direct_auth.pair_secret(c.keypair.private_key, b.keypair.public_key)
    decoder = FrameDecoder()
    with tls_to(b.port) as tls:
        hello = challenge_from(tls, decoder)
        assert hello.node_id == 2
        challenge = direct_auth.challenge_of(hello.ticket)
        assert challenge is not None
        answer = direct_auth.proof(proof_key, challenge, dialer=1, listener=2, listener_pin=b.identity.pin)
        tls.sendall(encode(Hello(1, answer)))
        closing = frames_until_closed(tls, decoder)
    assert closing and isinstance(closing[0], Close) and closing[0].code == CloseCode.NOT_AUTHENTICATED
    assert not b.up_with(1)
    assert b.direct.refused == {"proof": 1}


@pytest.mark.parametrize(
    "first",
    [Ping(7), Data(1, b"\x04" + bytes(100))],
    ids=["ping", "data"],
)
def test_anything_but_a_hello_first_closes_the_connection(
    agents: tuple[Agent, Agent, Agent], first: Frame
) -> None:
    a, b, _ = agents
    b.trust(a)
    decoder = FrameDecoder()
    with tls_to(b.port) as tls:
        challenge_from(tls, decoder)
        tls.sendall(encode(first))
        closing = frames_until_closed(tls, decoder)
    assert not any(isinstance(f, Pong) for f in closing)  # a ping before the hellos is not answered
    assert b.direct.refused == {"protocol": 1}
    b.wg.settimeout(0.2)
    with pytest.raises(TimeoutError):
        b.wg.recvfrom(65535)  # nothing reached WireGuard
    wait_until(lambda: b.net.call(lambda: b.direct._pending) == 0, 10, "the slot given back")


def test_a_connection_that_does_not_finish_its_hellos_is_closed(agents: tuple[Agent, Agent, Agent]) -> None:
    _, b, _ = agents
    b.direct.hello_timeout = 1.0  # the links read it at every keepalive round
    decoder = FrameDecoder()
    with tls_to(b.port) as tls:
        opened = time.monotonic()
        challenge_from(tls, decoder)
        frames_until_closed(tls, decoder)  # the listener closes: no proof came
        took = time.monotonic() - opened
    assert took >= 1.0
    wait_until(lambda: b.net.call(lambda: (b.direct._pending, len(b.direct._links))) == (0, 0), 10, "gone")


def test_a_connection_without_tls_leaves_nothing_behind(agents: tuple[Agent, Agent, Agent]) -> None:
    _, b, _ = agents
    for _ in range(20):  # a port scanner: connect, close
        socket.create_connection(("127.0.0.1", b.port), timeout=scaled(5)).close()
    with socket.create_connection(("127.0.0.1", b.port), timeout=scaled(5)) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not TLS: the handshake fails
        raw.settimeout(scaled(15))
        with contextlib.suppress(ConnectionResetError):
            while raw.recv(4096):
                pass
    assert b.net.call(lambda: (b.direct._pending, len(b.direct._links))) == (0, 0)


def test_one_address_cannot_take_every_slot(agents: tuple[Agent, Agent, Agent]) -> None:
    a, b, _ = agents
    b.trust(a)
    b.direct.max_pending_per_host = 2
    decoder = FrameDecoder()
    with tls_to(b.port) as one, tls_to(b.port) as two, tls_to(b.port) as three:
        challenge_from(one, decoder)
        challenge_from(two, FrameDecoder())
        closing = frames_until_closed(three, FrameDecoder())
        assert [f.code for f in closing if isinstance(f, Close)] == [CloseCode.BUSY]
        assert b.direct.refused == {"busy": 1}
    # Once those two are gone, a peer gets in.
    wait_until(lambda: b.net.call(lambda: b.direct._pending) == 0, 10, "the slots given back")
    a.trust(b)
    a.direct.want_threadsafe({2: b.target()})
    wait_until(lambda: a.up_with(2) and b.up_with(1), 10, "the peer's link is up")


def test_a_peer_whose_key_changed_loses_its_link(agents: tuple[Agent, Agent, Agent]) -> None:
    a, b, _ = agents
    linked(a, b)
    a.keypair = keys.generate_keypair()  # A rotated its key; B's netmap says so
    b.trust(a)
    wait_until(lambda: not b.up_with(1), 10, "B closes the link authenticated with the old key")


def test_a_peer_that_leaves_the_netmap_loses_its_link(agents: tuple[Agent, Agent, Agent]) -> None:
    a, b, _ = agents
    linked(a, b)
    b.trust()  # A left B's netmap
    wait_until(lambda: not a.up_with(2) and not b.up_with(1), 10, "the link is closed")
