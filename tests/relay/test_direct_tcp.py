"""Direct TCP links between two agents' shims on loopback, with no relay at all (agent/direct_tcp.py).

Each side's "WireGuard" is a plain UDP socket, as in test_shim.py; the listener and the dialer are the real
ones, over TLS with the listener's key pinned, and the dialer proves who it is with the pair's secret.
"""

from __future__ import annotations

import socket
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
from wgmesh.relay.protocol import Close, CloseCode, Frame, FrameDecoder, Hello, encode


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


@pytest.fixture
def agents() -> Iterator[tuple[Agent, Agent, Agent]]:
    with ExitStack() as stack:
        yield make_agent(1, stack), make_agent(2, stack), make_agent(3, stack)


def test_datagrams_cross_a_direct_link_with_no_relay(agents: tuple[Agent, Agent, Agent]) -> None:
    a, b, _ = agents
    a.trust(b)
    b.trust(a)
    a.direct.want_threadsafe({2: b.target()})
    wait_until(lambda: a.up_with(2) and b.up_with(1), 10, "the direct link is up on both ends")
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
    a.trust(b)
    b.trust(a)
    a.direct.want_threadsafe({2: b.target()})
    wait_until(lambda: a.up_with(2) and b.up_with(1), 10, "the direct link is up")
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


def test_a_listener_with_another_key_is_refused_before_anything_is_sent(
    agents: tuple[Agent, Agent, Agent],
) -> None:
    a, b, c = agents
    a.trust(b)
    b.trust(a)
    wrong = Target(2, ("127.0.0.1",), b.port, c.identity.pin)  # B listens, but the netmap pins C's key
    a.direct.want_threadsafe({2: wrong})
    wait_until(lambda: (a.direct.view(2).error or "").startswith("refused"), 10, "the dialer refuses")
    assert "the netmap pins" in (a.direct.view(2).error or "")
    assert not a.up_with(2) and not b.up_with(1)


def test_a_node_that_is_not_a_peer_is_refused(agents: tuple[Agent, Agent, Agent]) -> None:
    a, b, c = agents
    b.trust(a)  # B's netmap lists A only
    c.trust(b)
    c.direct.want_threadsafe({2: b.target()})
    wait_until(lambda: b.direct.refused >= 1, 10, "B refuses C")
    assert "not_authenticated" in (c.direct.view(2).error or "")
    assert not b.up_with(3) and not c.up_with(2)


def test_a_proof_made_with_another_secret_is_refused(agents: tuple[Agent, Agent, Agent]) -> None:
    a, b, c = agents
    b.trust(a)
    # C claims to be node 1 (A) and answers B's challenge, but it cannot make A's secret with B.
    proof_key = direct_auth.pair_secret(c.keypair.private_key, b.keypair.public_key)
    context = pinned_client_context()
    raw = socket.create_connection(("127.0.0.1", b.port), timeout=scaled(5))
    with context.wrap_socket(raw) as tls:
        decoder = FrameDecoder()
        frames: list[Frame] = []
        while not frames:
            frames = decoder.feed(tls.recv(4096))
        hello = frames[0]
        assert isinstance(hello, Hello) and hello.node_id == 2
        challenge = direct_auth.challenge_of(hello.ticket)
        assert challenge is not None
        answer = direct_auth.proof(proof_key, challenge, dialer=1, listener=2, listener_pin=b.identity.pin)
        tls.sendall(encode(Hello(1, answer)))
        closing: list[Frame] = []
        while not closing:
            chunk = tls.recv(4096)
            if not chunk:
                break
            closing = decoder.feed(chunk)
    assert closing and isinstance(closing[0], Close) and closing[0].code == CloseCode.NOT_AUTHENTICATED
    assert not b.up_with(1)
    assert b.direct.refused == 1


def test_a_peer_that_leaves_the_netmap_loses_its_link(agents: tuple[Agent, Agent, Agent]) -> None:
    a, b, _ = agents
    a.trust(b)
    b.trust(a)
    a.direct.want_threadsafe({2: b.target()})
    wait_until(lambda: a.up_with(2) and b.up_with(1), 10, "the direct link is up")
    b.trust()  # A left B's netmap
    wait_until(lambda: not a.up_with(2) and not b.up_with(1), 10, "the link is closed")
