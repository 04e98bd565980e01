"""Issue 4, e2e 6: the lab's relay refuses forged, expired and replayed tickets, and an oversized frame
closes only the connection that sent it while relayed traffic keeps flowing."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from lab_paths import ContinuousPing, path_of, ping_ok

from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store
from wgmesh.lab import Lab, wait_until
from wgmesh.lab.layout import RELAY_PORT, coordinator_db_url
from wgmesh.relay import protocol, tickets
from wgmesh.relay.protocol import Close, CloseCode, Data, FrameDecoder, Hello, HelloOk

pytestmark = [pytest.mark.e2e]


class Client:
    """A synthetic node speaking the relay protocol from the root namespace to the lab's hub."""

    def __init__(self, lab: Lab) -> None:
        self.sock = socket.create_connection((str(lab.plan.hub_ip), RELAY_PORT), timeout=5)
        self.decoder = FrameDecoder()
        self.frames: list[protocol.Frame] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_frame(self) -> protocol.Frame | None:
        while not self.frames:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.frames.extend(self.decoder.feed(chunk))
        return self.frames.pop(0)

    def close_code(self) -> int | None:
        frame = self.next_frame()
        while frame is not None and not isinstance(frame, Close):
            frame = self.next_frame()
        return frame.code if frame else None

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return True


def signing_key(lab: Lab) -> str:
    """The lab coordinator's ticket key, read from its database (what a coordinator signs with)."""
    return Registry(Store(coordinator_db_url(lab.plan))).relay_signing_key()


@pytest.mark.lab(sites=3, block_udp=[3])
def test_refusals_do_not_disturb_relayed_traffic(lab: Lab, tmp_path: Path) -> None:
    three = lab.plan.site(3)
    wait_until(lambda: ping_ok(lab, "vm1", three.vm_ip), 20, "vm1 reaches vm3 through the relay")
    wait_until(lambda: path_of(lab, "gw1", "gw3") == "relay", 10, "gw1-gw3 relayed")
    ping = ContinuousPing(lab, "vm1", three.vm_ip, tmp_path / "ping.log")
    try:
        wait_until(lambda: len(ping.replies()) >= 5, 10, "the ping running")
        started = time.time()
        key, now = signing_key(lab), time.time()

        forged = Client(lab)
        forged.send(
            protocol.encode(Hello(1, tickets.issue_ticket(tickets.generate_signing_key(), 1, 3600, now)))
        )
        assert forged.close_code() == CloseCode.BAD_TICKET

        expired = Client(lab)
        expired.send(protocol.encode(Hello(99, tickets.issue_ticket(key, 99, 3600, now - 7200))))
        assert expired.close_code() == CloseCode.TICKET_EXPIRED

        replayed = Client(lab)
        replayed.send(protocol.encode(Hello(2, tickets.issue_ticket(key, 1, 3600, now))))
        assert replayed.close_code() == CloseCode.WRONG_NODE

        big = Client(lab)
        big.send(protocol.encode(Hello(99, tickets.issue_ticket(key, 99, 3600, now))))
        assert isinstance(big.next_frame(), HelloOk)
        big.send(protocol.encode(Data(1, bytes(10_000))))
        assert big.close_code() == CloseCode.FRAME_TOO_LARGE
        assert big.closed()

        refused = time.time()
        wait_until(lambda: ping.replies_since(refused) >= 20, 10, "two more seconds of replies")
        gap = ping.longest_gap(since=started)
        print(f"relayed ping's longest gap while the relay refused four clients: {gap:.2f} s")
        assert gap < 1.0
        assert path_of(lab, "gw1", "gw3") == "relay"
        assert lab.alive("relay")
    finally:
        ping.stop()
