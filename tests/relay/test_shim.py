"""The agent's shim and prober against real `wgmesh-relay` processes on loopback.

Each side's "WireGuard" is a plain UDP socket on 127.0.0.1 standing where the WireGuard port would be: the
shim only ever exchanges datagrams with that port, so this is exactly the traffic it carries in the lab.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from relay_harness import Keys, RelayProcess, relay_process, wait_until

from wgmesh.agent import probe_wire
from wgmesh.agent.netloop import NetLoop
from wgmesh.agent.prober import RELAY, Prober
from wgmesh.agent.shim import RelayShim
from wgmesh.lab.timescale import scaled
from wgmesh.models import RelayGrant, RelayInfo


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Side:
    node_id: int
    net: NetLoop
    shim: RelayShim
    prober: Prober
    wg: socket.socket
    refused: list[int]

    def grant(self, keys: Keys, relays: list[RelayProcess], ticket: str | None = None) -> RelayGrant:
        return RelayGrant(
            relays=[RelayInfo(id=f"r{r.port}", url=r.url, pin=r.pin) for r in relays],
            ticket=ticket or keys.ticket(self.node_id),
            expires_at=datetime.now(UTC),
            coordinator_key=keys.public,
        )

    def recv(self, timeout: float = 3.0) -> tuple[bytes, tuple[str, int]]:
        self.wg.settimeout(scaled(timeout))
        data, addr = self.wg.recvfrom(65535)
        return data, addr

    def shim_address(self, peer: int) -> tuple[str, int]:
        return self.shim.endpoint_for(peer).address


def make_side(node_id: int, stack: ExitStack) -> Side:
    wg = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wg.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    wg.bind(("127.0.0.1", 0))
    stack.callback(wg.close)
    net = NetLoop()
    refused: list[int] = []
    prober_box: list[Prober] = []
    shim = RelayShim(
        net.loop,
        node_id,
        wg.getsockname()[1],
        lambda sender, data: prober_box[0].handle_from_relay(sender, data),  # noqa: PLW0108 - bound later
        lambda: refused.append(1),
    )
    prober = Prober(net.loop, node_id, udp_port(), shim.send_to_peer)
    prober_box.append(prober)
    net.start()
    net.call(prober.open)
    stack.callback(net.stop)
    stack.callback(lambda: net.call(prober.close))
    stack.callback(lambda: net.call(shim._stop))
    return Side(node_id, net, shim, prober, wg, refused)


@pytest.fixture
def two_relays(keys: Keys, tmp_path: Path) -> Iterator[list[RelayProcess]]:
    with (
        relay_process(tmp_path / "r1.log", "--coordinator-key", keys.public) as r1,
        relay_process(tmp_path / "r2.log", "--coordinator-key", keys.public) as r2,
    ):
        yield [r1, r2]


@pytest.fixture
def pair(keys: Keys, relay: RelayProcess) -> Iterator[tuple[Side, Side]]:
    with ExitStack() as stack:
        a, b = make_side(1, stack), make_side(2, stack)
        key = probe_wire.pair_key(None, "A", "B")
        a.prober.keys, b.prober.keys = {2: key}, {1: key}
        a.shim.retain_threadsafe({2})  # the netmap's peers: the shim takes frames from these only
        b.shim.retain_threadsafe({1})
        for side in (a, b):
            side.shim.configure_threadsafe(side.grant(keys, [relay]))
        wait_until(lambda: a.shim.active() is not None and b.shim.active() is not None, 5, "both connected")
        yield a, b


def test_datagrams_cross_the_relay_and_arrive_from_the_senders_socket(pair: tuple[Side, Side]) -> None:
    a, b = pair
    a.wg.sendto(b"\x01\x00\x00\x00handshake", a.shim_address(2))
    data, source = b.recv()
    assert data == b"\x01\x00\x00\x00handshake"
    # B's WireGuard sees A at B's shim socket for A: one stable endpoint per peer, so it roams there.
    assert source == b.shim_address(1)
    b.wg.sendto(b"\x02\x00\x00\x00response", source)
    data, source = a.recv()
    assert data == b"\x02\x00\x00\x00response"
    assert source == a.shim_address(2)


def test_a_burst_of_datagrams_arrives_whole_and_in_order(pair: tuple[Side, Side]) -> None:
    a, b = pair
    target = a.shim_address(2)
    count = 3000
    for i in range(count):
        a.wg.sendto(b"\x04\x00\x00\x00" + i.to_bytes(4, "big") + bytes(1380), target)
        if i % 200 == 0:
            time.sleep(0.002)  # a WireGuard sender is paced by its tunnel, not a tight loop
    got = []
    try:
        while len(got) < count:
            data, _ = b.recv(timeout=2.0)
            got.append(int.from_bytes(data[4:8], "big"))
    except TimeoutError:
        pass
    assert len(got) >= count * 0.99, f"{count - len(got)} datagrams lost; shim counters {a.shim.counters}"
    assert got == sorted(got)


UDP_GRO = 104  # <linux/udp.h>: the socket takes a GSO send whole, its segment size in a control message


def received_segments(wg: socket.socket, count: int) -> tuple[list[bytes], bool]:
    """`count` datagrams from a UDP_GRO socket, cut at the segment size (fewer when they stop coming within a
    scaled 3 s); and whether any read held several."""
    wg.settimeout(scaled(3.0))
    found: list[bytes] = []
    coalesced = False
    with contextlib.suppress(TimeoutError):
        while len(found) < count:
            data, ancillary, _flags, _source = wg.recvmsg(65535, socket.CMSG_SPACE(4))
            size = next((struct.unpack("=i", d[:4])[0] for lvl, kind, d in ancillary if kind == UDP_GRO), 0)
            if size and len(data) > size:
                coalesced = True
                found += [data[i : i + size] for i in range(0, len(data), size)]
            else:
                found.append(data)
    return found, coalesced


def test_a_run_of_datagrams_reaches_wireguard_in_one_send_and_intact(pair: tuple[Side, Side]) -> None:
    """Datagrams of one sender and size from one relay read go to WireGuard as one UDP GSO send (the kernel
    cuts it in segments: WireGuard reads them one by one); a shorter one ends a run, sizes and order kept."""
    a, b = pair
    b.wg.setsockopt(socket.SOL_UDP, UDP_GRO, 1)  # so that this test can see a send that held several
    target = a.shim_address(2)
    sizes = [1400] * 8 + [700] + [1400] * 4 + [90]
    seen_one_send = False
    for burst in range(20):  # a run needs the burst in one read of the relay connection: nearly always
        sent = [bytes([4, burst, i]) + bytes(size - 3) for i, size in enumerate(sizes)]
        for datagram in sent:
            a.wg.sendto(datagram, target)
        got, coalesced = received_segments(b.wg, len(sent))
        assert got == sent, f"burst {burst}: {[len(g) for g in got]}; counters {b.shim.counters}"
        seen_one_send |= coalesced
        if seen_one_send:
            break
    assert seen_one_send, "no burst reached WireGuard as one send"


def test_a_kernel_refusing_segmentation_gets_one_send_per_datagram(pair: tuple[Side, Side]) -> None:
    """Where the kernel refuses a GSO send (before Linux 4.18; here: a socket with UDP checksums off, which
    GSO needs), the shim sends each datagram by itself from then on, and nothing is lost on the way."""
    a, b = pair
    b.shim_address(1)  # B's socket for A exists before the datagrams arrive
    SO_NO_CHECK = 11  # <asm-generic/socket.h>
    b.shim._sockets[1].setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    target = a.shim_address(2)
    for burst in range(20):
        sent = [bytes([4, burst, i]) + bytes(1397) for i in range(10)]
        for datagram in sent:
            a.wg.sendto(datagram, target)
        got, coalesced = received_segments(b.wg, len(sent))
        assert got == sent and not coalesced
        if not b.shim._gso:
            break
    assert not b.shim._gso, "no run was gathered, so the refusal was never met"
    assert "wireguard_unreachable" not in b.shim.counters.dropped


def test_an_empty_datagram_is_dropped_and_the_link_stays(pair: tuple[Side, Side]) -> None:
    """WireGuard never sends one, but a peer may: an empty Data frame is counted and dropped, and what
    follows it on the same connection still arrives."""
    a, b = pair
    target = a.shim_address(2)
    a.wg.sendto(b"", target)
    a.wg.sendto(b"\x04\x00\x00\x00after", target)
    assert b.recv()[0] == b"\x04\x00\x00\x00after"
    wait_until(lambda: b.shim.counters.dropped.get("empty", 0) == 1, 3, "the drop counted")
    assert b.shim.active() is not None


def test_datagrams_from_other_local_ports_are_not_relayed(pair: tuple[Side, Side]) -> None:
    a, b = pair
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
        intruder.sendto(b"\x04\x00\x00\x00spoof", a.shim_address(2))
    wait_until(lambda: a.shim.counters.dropped.get("foreign_source", 0) >= 1, 3, "the drop counted")
    with pytest.raises(TimeoutError):
        b.recv(timeout=0.5)


def test_probes_measure_both_paths(pair: tuple[Side, Side]) -> None:
    a, b = pair
    direct = a.net.submit(a.prober.ping(2, ("127.0.0.1", b.prober.port), 1.0)).result(5)
    relayed = a.net.submit(a.prober.ping(2, RELAY, 1.0)).result(5)
    assert direct is not None and 0 < direct < 1.0
    assert relayed is not None and 0 < relayed < 1.0
    burst = a.net.submit(a.prober.burst(2, RELAY)).result(5)
    assert burst is not None and burst.received == burst.sent and burst.loss == 0
    assert burst.goodput > 10e6
    # Probes never reach WireGuard.
    with pytest.raises(TimeoutError):
        b.recv(timeout=0.2)


def test_a_probe_signed_with_another_key_gets_no_answer(pair: tuple[Side, Side]) -> None:
    a, b = pair
    b.prober.keys = {1: probe_wire.pair_key(None, "X", "Y")}
    assert a.net.submit(a.prober.ping(2, ("127.0.0.1", b.prober.port), 0.5)).result(5) is None
    assert a.net.submit(a.prober.ping(2, RELAY, 0.5)).result(5) is None


def test_a_refused_ticket_asks_for_a_new_one(keys: Keys, relay: RelayProcess) -> None:
    with ExitStack() as stack:
        side = make_side(7, stack)
        side.shim.configure_threadsafe(side.grant(keys, [relay], ticket=Keys().ticket(7)))
        wait_until(lambda: bool(side.refused), 5, "the refusal reported")
        assert side.shim.active() is None
        side.shim.configure_threadsafe(side.grant(keys, [relay]))
        wait_until(lambda: side.shim.active() is not None, 5, "connected with the fresh ticket")


def test_fails_over_to_the_next_relay_when_the_active_one_dies(
    keys: Keys, two_relays: list[RelayProcess]
) -> None:
    with ExitStack() as stack:
        a, b = make_side(1, stack), make_side(2, stack)
        a.shim.retain_threadsafe({2})
        b.shim.retain_threadsafe({1})
        for side in (a, b):
            side.shim.configure_threadsafe(side.grant(keys, two_relays))
        wait_until(
            lambda: all(len([v for v in s.shim.views() if v.up]) == 2 for s in (a, b)), 5, "both relays up"
        )
        active = a.shim.active()
        assert active is not None
        victim = next(r for r in two_relays if f"r{r.port}" == active.info.id)
        victim.stop()
        wait_until(lambda: (x := a.shim.active()) is not None and x.info.id != active.info.id, 5, "failover")
        a.wg.sendto(b"\x04\x00\x00\x00after failover", a.shim_address(2))
        data, _ = b.recv()
        assert data == b"\x04\x00\x00\x00after failover"
        down = [v for v in a.shim.views() if not v.up]
        assert [v.id for v in down] == [active.info.id] and down[0].error


def test_foreign_datagrams_among_wireguards_are_dropped_and_the_rest_relayed(pair: tuple[Side, Side]) -> None:
    a, b = pair
    target = a.shim_address(2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
        for i in range(20):
            a.wg.sendto(b"\x04\x00\x00\x00" + bytes([i]), target)
            if i % 5 == 2:
                intruder.sendto(b"\x04\x00\x00\x00spoof", target)
    got = [b.recv()[0] for _ in range(20)]
    assert got == [b"\x04\x00\x00\x00" + bytes([i]) for i in range(20)]
    wait_until(lambda: a.shim.counters.dropped.get("foreign_source", 0) == 4, 3, "the drops counted")
    with pytest.raises(TimeoutError):
        b.recv(timeout=0.3)
    assert b.shim.counters.from_relay == 20


def test_frames_from_senders_outside_the_netmap_are_dropped_without_a_socket(
    keys: Keys, relay: RelayProcess, pair: tuple[Side, Side]
) -> None:
    a, b = pair
    with ExitStack() as stack:
        stranger = make_side(9, stack)  # holds a valid ticket, but is not in B's netmap
        stranger.shim.retain_threadsafe({2})
        stranger.shim.configure_threadsafe(stranger.grant(keys, [relay]))
        wait_until(lambda: stranger.shim.active() is not None, 5, "the stranger connected")
        sockets_before = len(b.shim._sockets)
        for i in range(5):
            stranger.wg.sendto(b"\x01\x00\x00\x00" + bytes([i]), stranger.shim_address(2))
        wait_until(lambda: b.shim.counters.dropped.get("unknown_sender", 0) == 5, 3, "the drops counted")
        with pytest.raises(TimeoutError):
            b.recv(timeout=0.3)
        assert len(b.shim._sockets) == sockets_before  # no local socket opened per unknown sender
    # a peer of the netmap still gets through
    a.wg.sendto(b"\x04\x00\x00\x00still", a.shim_address(2))
    assert b.recv()[0] == b"\x04\x00\x00\x00still"
