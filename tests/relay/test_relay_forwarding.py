"""The real relay process forwards Data frames between authenticated nodes (docs/relay-protocol.md)."""

from __future__ import annotations

import struct
import time

import pytest
from relay_harness import Closed, Keys, RelayProcess, nodes

from wgmesh.relay import protocol as p


def test_hello_ok_echoes_node_and_ticket_expiry(relay: RelayProcess, keys: Keys) -> None:
    issued = int(time.time()) - 100
    with nodes(relay, 1) as (a,):
        ok = a.hello(11, keys.ticket(11, ttl=600, now=issued))
    assert ok == p.HelloOk(node_id=11, expires_at=issued + 600, version=1)


def test_forwards_both_ways_with_sender_id_rewritten(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 2) as (a, b):
        ok = a.hello(21, keys.ticket(21))
        assert (ok.node_id, ok.version) == (21, 1)
        b.hello(22, keys.ticket(22))
        a.send(p.Data(22, b"from a"))
        assert b.data() == p.Data(21, b"from a")
        b.send(p.Data(21, b"from b"))
        assert a.data() == p.Data(22, b"from b")


def test_many_frames_in_one_write_arrive_in_order(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 3) as (a, b, c):
        a.hello(31, keys.ticket(31))
        b.hello(32, keys.ticket(32))
        c.hello(33, keys.ticket(33))
        sent = [p.Data(32 if i % 3 else 33, bytes([i % 256]) * (i % 1500)) for i in range(600)]
        # hello refresh and a ping in the same write: control frames interleave with the fast path
        mid = [p.Hello(node_id=31, ticket=keys.ticket(31)), p.Ping(7)]
        a.send_raw(p.encode_many(sent[:300] + mid + sent[300:]))
        got_b = [b.data() for _ in range(400)]
        got_c = [c.data() for _ in range(200)]
        assert got_b == [p.Data(31, f.datagram) for f in sent if f.peer_id == 32]
        assert got_c == [p.Data(31, f.datagram) for f in sent if f.peer_id == 33]
        assert isinstance(a.recv(), p.HelloOk)
        assert a.recv() == p.Pong(7)


def test_frames_split_across_writes_are_reassembled(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 2) as (a, b):
        a.hello(41, keys.ticket(41))
        b.hello(42, keys.ticket(42))
        wire = p.encode_many([p.Data(42, b"x" * 1000), p.Data(42, b"y" * 5)])
        for i in range(0, len(wire), 7):
            a.send_raw(wire[i : i + 7])
        assert b.data() == p.Data(41, b"x" * 1000)
        assert b.data() == p.Data(41, b"y" * 5)


def test_oversized_frame_closes_only_that_connection(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 4) as (a, b, c, d):
        for node, nid in ((a, 51), (b, 52), (c, 53), (d, 54)):
            node.hello(nid, keys.ticket(nid))
        # the default limit is 9,216 bytes; a header announcing more is refused before its payload arrives
        c.send_raw(struct.pack(">HBBI", 9217, p.FrameType.DATA, 0, 54))
        close = c.expect_close(p.CloseCode.FRAME_TOO_LARGE)
        assert "9216" in close.message
        a.send(p.Data(52, b"still flowing" * 700))  # 9,100 bytes: under the limit
        assert b.data() == p.Data(51, b"still flowing" * 700)
        d.send(p.Data(53, b"to a closed node"))
        assert d.alive()


def test_frame_to_unconnected_node_is_dropped_silently(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 2) as (a, b):
        a.hello(61, keys.ticket(61))
        b.hello(62, keys.ticket(62))
        a.send(p.Data(999, b"nobody"), p.Data(61, b"myself"), p.Data(62, b"after"))
        # no error frame for the dropped ones; the next frame still flows and the sender stays connected
        assert b.data() == p.Data(61, b"after")
        assert a.alive()


def test_newer_connection_replaces_older(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 3) as (old, new, peer):
        old.hello(71, keys.ticket(71))
        peer.hello(72, keys.ticket(72))
        new.hello(71, keys.ticket(71))
        old.expect_close(p.CloseCode.REPLACED)
        peer.send(p.Data(71, b"to the newest"))
        assert new.data() == p.Data(72, b"to the newest")


def test_refresh_with_another_nodes_id_is_wrong_node(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 1) as (a,):
        a.hello(81, keys.ticket(81, ttl=60))
        refreshed = a.hello(81, keys.ticket(81, ttl=7200))
        assert refreshed.node_id == 81 and refreshed.expires_at > 0
        a.send(p.Hello(node_id=82, ticket=keys.ticket(82)))
        a.expect_close(p.CloseCode.WRONG_NODE)


def test_ping_is_answered_with_its_token(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 1) as (a,):
        a.hello(91, keys.ticket(91))
        a.send(p.Ping(0x0102030405060708))
        assert a.recv() == p.Pong(0x0102030405060708)


def test_node_close_frame_ends_the_connection(relay: RelayProcess, keys: Keys) -> None:
    with nodes(relay, 1) as (a,):
        a.hello(95, keys.ticket(95))
        a.send(p.Close(p.CloseCode.NORMAL, "bye"))
        with pytest.raises(Closed):
            a.recv(timeout=3)
