"""The prober against replayed and misrouted probes (issue 16): real probers on loopback sockets, with an
attacker's socket that records genuine probes and plays them back."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from wgmesh.agent import probe_wire
from wgmesh.agent.netloop import NetLoop
from wgmesh.agent.prober import Prober
from wgmesh.lab.timescale import scaled
from wgmesh.lab.wait import wait_until

KEY = probe_wire.pair_key(None, "A", "B")


@dataclass
class Pair:
    net: NetLoop
    a: Prober
    b: Prober
    b_relays: list[bool]

    def ping(self, prober: Prober, peer: int, via: tuple[str, int], timeout: float = 0.5) -> float | None:
        return self.net.submit(prober.ping(peer, via, timeout)).result(5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pair() -> Iterator[Pair]:
    with ExitStack() as stack:
        net = NetLoop()
        b_relays = [False]
        a = Prober(net.loop, 1, free_port(), lambda _peer, _data: False)
        b = Prober(net.loop, 2, free_port(), lambda _peer, _data: False, lambda _peer: b_relays[0])
        a.keys, b.keys = {2: KEY}, {1: KEY}
        net.start()
        stack.callback(net.stop)
        for prober in (a, b):
            net.call(prober.open)
            stack.callback(lambda p=prober: net.call(p.close))
        yield Pair(net, a, b, b_relays)


@pytest.fixture
def attacker() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        yield sock


def test_a_replayed_ping_does_not_make_a_relaying_peer_look_direct(
    pair: Pair, attacker: socket.socket
) -> None:
    # Recorded while B was direct: a genuine ping, MAC and all, saying "I do not relay this pair".
    assert pair.ping(pair.b, 1, attacker.getsockname(), timeout=0.2) is None
    recorded, _ = attacker.recvfrom(2048)
    assert probe_wire.decode(recorded, KEY) == probe_wire.Ping(
        2, probe_wire.decode(recorded, KEY).token, False
    )
    # B moves to the relay; A learns it from the answer to its own ping.
    pair.b_relays[0] = True
    assert pair.ping(pair.a, 2, ("127.0.0.1", pair.b.port)) is not None
    learned = pair.a.peer_relays[2]
    assert learned[0] is True
    # The replay reaches A (which answers it, as it cannot tell), but A's belief does not move.
    attacker.sendto(recorded, ("127.0.0.1", pair.a.port))
    attacker.recvfrom(2048)  # A's pong to the replayer: the replay was processed
    assert pair.a.peer_relays[2] == learned


def test_a_replayed_pong_does_not_answer_a_later_ping(pair: Pair, attacker: socket.socket) -> None:
    # A path through the attacker's socket that works once: it forwards A's ping to B and B's pong back.
    relay_addr = attacker.getsockname()
    future = pair.net.submit(pair.a.ping(2, relay_addr, 1.0))
    ping, a_addr = attacker.recvfrom(2048)
    attacker.sendto(ping, ("127.0.0.1", pair.b.port))
    pong, _ = attacker.recvfrom(2048)
    attacker.sendto(pong, a_addr)
    assert future.result(5) is not None
    # The path dies; a new ping goes out and the attacker plays the old pong back from the right address.
    future = pair.net.submit(pair.a.ping(2, relay_addr, 0.5))
    attacker.recvfrom(2048)
    attacker.sendto(pong, a_addr)
    assert future.result(5) is None
    wait_until(lambda: pair.a.unmatched >= 1, 2, "the replay counted")


def test_an_answer_over_another_path_does_not_make_the_pinged_one_alive(
    pair: Pair, attacker: socket.socket
) -> None:
    # A pings B at an address where nothing answers (a dead direct path); the attacker sees the ping, has B
    # answer it over a path that works, and hands A the genuine, fresh pong from that other address.
    dead = ("127.0.0.1", free_port())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tap:
        tap.bind(dead)
        tap.settimeout(2.0)
        # A's probe waits long enough on any machine for the forged pong to arrive while it is still
        # outstanding: with a short one, a slow machine would time the probe out first and the test would
        # pass with the path check gone.
        future = pair.net.submit(pair.a.ping(2, dead, scaled(5.0)))
        ping, a_addr = tap.recvfrom(2048)
    attacker.sendto(ping, ("127.0.0.1", pair.b.port))
    pong, _ = attacker.recvfrom(2048)
    before = pair.a.unmatched
    attacker.sendto(pong, a_addr)
    wait_until(lambda: pair.a.unmatched > before, 2, "the misrouted pong counted")
    assert not future.done(), "the probe ended before the forged pong was judged"
    assert future.result(scaled(10.0)) is None
    assert 2 not in pair.a.peer_relays
    assert pair.ping(pair.a, 2, ("127.0.0.1", pair.b.port)) is not None  # the real path still answers
