"""RelayServer in-process: drop and queue counters, a slow receiver, liveness and shutdown."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from relay_harness import InProcessRelay, Keys, nodes, wait_until

from wgmesh.errors import ValidationError
from wgmesh.relay import protocol as p
from wgmesh.relay.server import RelayConfig, RelayError, RelayServer

QUEUE = 256 * 1024


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def relay(keys: Keys) -> Iterator[InProcessRelay]:
    r = InProcessRelay(RelayConfig(host="127.0.0.1", port=0, coordinator_key=keys.public, queue_bytes=QUEUE))
    try:
        yield r
    finally:
        r.close()


def test_counts_forwarded_frames_and_drops_by_reason(relay: InProcessRelay, keys: Keys) -> None:
    with nodes(relay, 2) as (a, b):
        a.hello(1, keys.ticket(1))
        b.hello(2, keys.ticket(2))
        a.send(p.Data(2, b"x" * 100), p.Data(3, b"nobody"), p.Data(3, b"nobody"), p.Data(1, b"me"))
        assert b.data() == p.Data(1, b"x" * 100)
        assert a.alive()
        stats = relay.stats()
    assert stats.connected_nodes == 2
    assert stats.frames_forwarded == 1
    assert stats.bytes_forwarded == 108  # header, peer id, datagram
    assert stats.drops == {"no_receiver": 2, "queue_full": 0, "to_self": 1}
    assert stats.connections_total == 2


def test_hello_and_data_in_one_write(relay: InProcessRelay, keys: Keys) -> None:
    with nodes(relay, 2) as (a, b):
        b.hello(2, keys.ticket(2))
        a.send(p.Hello(node_id=1, ticket=keys.ticket(1)), p.Data(2, b"right after hello"))
        assert isinstance(a.recv(), p.HelloOk)
        assert b.data() == p.Data(1, b"right after hello")


def test_refusals_are_counted_by_close_code(relay: InProcessRelay, keys: Keys) -> None:
    with nodes(relay, 3) as (a, b, c):
        a.send(p.Hello(node_id=1, ticket=Keys().ticket(1)))
        a.expect_close(p.CloseCode.BAD_TICKET)
        b.send(p.Hello(node_id=1, ticket=keys.ticket(2)))
        b.expect_close(p.CloseCode.WRONG_NODE)
        c.send(p.Ping(1))
        c.expect_close(p.CloseCode.NOT_AUTHENTICATED)
    assert relay.stats().refused == {"bad_ticket": 1, "wrong_node": 1, "not_authenticated": 1}


def test_slow_receiver_costs_its_own_drops_not_the_senders_other_traffic(
    relay: InProcessRelay, keys: Keys
) -> None:
    with nodes(relay, 2) as (sender, fast), nodes(relay, 1, rcvbuf=4096) as (slow,):
        sender.hello(1, keys.ticket(1))
        fast.hello(2, keys.ticket(2))
        slow.hello(3, keys.ticket(3))
        to_fast: list[bytes] = []
        to_slow: list[bytes] = []
        got: list[p.Data] = []
        # The slow node never reads until the end; every round, the fast one must receive its frames.
        for round_ in range(400):
            slow_batch = [round_.to_bytes(2, "big") + i.to_bytes(2, "big") + b"s" * 1396 for i in range(64)]
            fast_batch = [round_.to_bytes(2, "big") + i.to_bytes(2, "big") + b"f" * 100 for i in range(8)]
            to_slow += slow_batch
            to_fast += fast_batch
            sender.send(*[p.Data(3, d) for d in slow_batch], *[p.Data(2, d) for d in fast_batch])
            got += [fast.data() for _ in fast_batch]
            if round_ % 10 == 9 and relay.stats().drops["queue_full"] > 200:
                break
        stats = relay.stats()
        assert stats.drops["queue_full"] > 200, stats
        assert stats.queue_bytes <= QUEUE + 4096  # the slow queue is bounded (plus the others' few bytes)
        assert got == [p.Data(1, d) for d in to_fast]  # no loss and no stall for the fast receiver
        assert sender.alive()
        # The slow node finally reads: an in-order subsequence of what was sent, with gaps where it dropped.
        arrived: list[bytes] = []
        while True:
            try:
                frame = slow.data(timeout=0.5)
            except TimeoutError:
                break
            assert frame.peer_id == 1
            arrived.append(frame.datagram)
    assert 0 < len(arrived) < len(to_slow)
    assert len(arrived) + relay.stats().drops["queue_full"] == len(to_slow)
    it = iter(to_slow)
    assert all(any(d == s for s in it) for d in arrived), "frames arrived out of order"


def test_silent_node_is_pinged_then_closed(keys: Keys) -> None:
    config = RelayConfig(
        host="127.0.0.1", port=0, coordinator_key=keys.public, ping_after=0.2, dead_after=0.8
    )
    relay = InProcessRelay(config)
    try:
        with nodes(relay, 1) as (a,):
            a.hello(1, keys.ticket(1))
            # answering pings keeps the connection alive well past dead_after
            deadline = time.monotonic() + 1.5
            pings = 0
            while time.monotonic() < deadline:
                frame = a.recv(timeout=1)
                assert isinstance(frame, p.Ping), frame
                a.send(p.Pong(frame.token))
                pings += 1
            assert pings >= 3
            # then silence: a ping or two more, and the relay gives up
            start = time.monotonic()
            a.expect_close(p.CloseCode.NORMAL, timeout=3)
            assert time.monotonic() - start < 1.5
    finally:
        relay.close()


def test_stop_sends_going_away_to_every_node(keys: Keys) -> None:
    relay = InProcessRelay(RelayConfig(host="127.0.0.1", port=0, coordinator_key=keys.public))
    try:
        with nodes(relay, 2) as (a, b):
            a.hello(1, keys.ticket(1))
            closer = threading.Thread(target=relay.close)
            closer.start()
            a.expect_close(p.CloseCode.GOING_AWAY)
            b.expect_close(p.CloseCode.GOING_AWAY)  # not yet authenticated: told too
            closer.join(5)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", relay.port), timeout=1).close()
    finally:
        if not relay.loop.is_closed():
            relay.close()


def test_embedded_server_reports_its_port_and_a_taken_port(keys: Keys) -> None:
    async def scenario() -> None:
        first = RelayServer(RelayConfig(host="127.0.0.1", port=0, coordinator_key=keys.public))
        await first.start()
        try:
            assert first.port > 0
            second = RelayServer(RelayConfig(host="127.0.0.1", port=first.port, coordinator_key=keys.public))
            with pytest.raises(RelayError, match=f"cannot listen on 127.0.0.1:{first.port}"):
                await second.start()
        finally:
            await first.stop()

    asyncio.run(scenario())


def test_config_is_checked_where_it_enters(keys: Keys) -> None:
    with pytest.raises(ValidationError, match="max frame"):
        RelayConfig(host="127.0.0.1", port=0, coordinator_key=keys.public, max_payload=70000)
    with pytest.raises(ValidationError, match="both"):
        RelayConfig(host="127.0.0.1", port=0, coordinator_key=keys.public, tls_cert=Path("c"))
    with pytest.raises(ValidationError, match="public key"):
        RelayServer(RelayConfig(host="127.0.0.1", port=0, coordinator_key="bm90IGEga2V5"))


def test_closed_connection_is_forgotten(relay: InProcessRelay, keys: Keys) -> None:
    with nodes(relay, 2) as (a, b):
        a.hello(1, keys.ticket(1))
        b.hello(2, keys.ticket(2))
        a.close()
        wait_until(lambda: relay.stats().connected_nodes == 1, 3, "the relay to forget a closed node")
        b.send(p.Data(1, b"to a gone node"))
        assert b.alive()
    assert relay.stats().drops["no_receiver"] == 1
