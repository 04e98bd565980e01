"""The shim's read path on its own: a relay stream cut anywhere (a byte, a frame and a half, a whole buffer)
reaches WireGuard's socket whole and in order, from each sender's own socket, with control frames and
runs of equal sizes mixed in; the partial frame at a read's end always fits the next read.

The stream is handed to the link the way a transport does (`get_buffer` / `buffer_updated`), on this
thread; the sockets are real (WireGuard's is a plain UDP socket on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Iterator

import pytest

from wgmesh.agent.shim import RelayLink, RelayShim
from wgmesh.models import RelayInfo
from wgmesh.relay import protocol

SENDERS = (2, 3, 4)
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; not in Python's socket module


@pytest.fixture
def wireguard() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    with contextlib.suppress(OSError):  # as root: past net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def drain(sock: socket.socket, into: list[tuple[bytes, int]]) -> None:
    while True:
        try:
            data, source = sock.recvfrom(65535)
        except BlockingIOError:
            return
        into.append((data, source[1]))


@pytest.mark.parametrize("seed", range(6))
def test_a_stream_cut_anywhere_reaches_wireguard_whole_and_in_order(
    wireguard: socket.socket, seed: int
) -> None:
    rng = random.Random(seed)
    loop = asyncio.new_event_loop()  # never run: only `endpoint_for` schedules on it (socket watching)
    shim = RelayShim(loop, 1, wireguard.getsockname()[1], on_probe=lambda _sender, _data: None)
    try:
        shim._retain(set(SENDERS))
        link = RelayLink(shim, RelayInfo(id="r1", url="tcp://127.0.0.1:9"))
        sent: list[tuple[bytes, int]] = []
        frames: list[bytes] = []
        for index in range(400):
            sender = rng.choice(SENDERS)
            # Runs of a TCP flow's full-size packets, the odd short one, now and then a jumbo or a tiny one.
            size = rng.choice([1400] * 6 + [rng.randint(1, 1399), rng.randint(1401, 65000), 1])
            datagram = bytes([4, index % 256]) + rng.randbytes(max(0, size - 2))
            datagram = datagram[:size]
            sent.append((datagram, sender))
            frames.append(protocol.encode_data(sender, datagram))
            if rng.random() < 0.05:
                frames.append(
                    protocol.encode(protocol.Ping(index))
                )  # answered only when connected: dropped here
        stream = b"".join(frames)
        ports = {sender: shim.endpoint_for(sender).port for sender in SENDERS}
        got: list[tuple[bytes, int]] = []
        # What one feed may deliver at most, so that WireGuard's socket (drained after each) never overflows:
        # a tenth of its buffer, which the kernel charges several times a small datagram's size.
        most = max(1, wireguard.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 10)
        pos = 0
        while pos < len(stream):
            room = link.get_buffer(-1)
            assert len(room) >= protocol.MAX_PAYLOAD, "a partial frame left too little room for the next read"
            n = min(len(room), len(stream) - pos, most, rng.choice([1, 3, 9, 700, 1409, 70_000, len(room)]))
            room[:n] = stream[pos : pos + n]
            room.release()
            link.buffer_updated(n)
            pos += n
            drain(wireguard, got)
        drain(wireguard, got)
        assert link._filled == 0, "bytes left in the buffer after the whole stream"
        assert [(data, port) for data, port in got] == [(data, ports[sender]) for data, sender in sent]
        assert shim.counters.from_relay == len(sent) and not shim.counters.dropped
    finally:
        shim._retain(set())
        loop.close()
