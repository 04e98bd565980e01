"""Issue 4, e2e 6: the lab's relay refuses forged, expired and replayed tickets, and an oversized frame
closes only the connection that sent it while relayed traffic keeps flowing."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from lab_paths import path_of, ping_ok

from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store
from wgmesh.lab import Lab, wait_until
from wgmesh.lab.layout import RELAY_PORT, coordinator_db_url
from wgmesh.lab.pings import ContinuousPing
from wgmesh.lab.services import log_path, relay_pin
from wgmesh.pins import Pin
from wgmesh.relay import protocol, tickets
from wgmesh.relay.identity import KEY_FILE, RelayIdentity, generate_key, pinned_client_context, refusal
from wgmesh.relay.protocol import Close, CloseCode, Data, FrameDecoder, Hello, HelloOk
from wgmesh.secure_files import write_private

pytestmark = [pytest.mark.e2e]


class Client:
    """A synthetic node speaking the relay protocol from the root namespace to the lab's hub, over TLS
    with the relay's key checked against the pin the coordinator announces, as the agents do."""

    def __init__(self, lab: Lab) -> None:
        raw = socket.create_connection((str(lab.plan.hub_ip), RELAY_PORT), timeout=5)
        self.sock = pinned_client_context().wrap_socket(raw)
        assert refusal(self.sock.getpeercert(binary_form=True), Pin.parse(relay_pin(lab.plan))) is None
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


@pytest.mark.lab(
    sites=3, block_udp=[3], block_tcp_between=[(1, 3), (2, 3)]
)  # TCP between them too: the relay
class TestRelayedLab:
    """Both tests on one lab (`shared_lab`): each begins by waiting for vm1 to reach vm3 through the relay,
    and each leaves it so: the first never stops the relay, the second puts the pinned key back and waits
    for the relayed path again before it ends."""

    def test_refusals_do_not_disturb_relayed_traffic(self, shared_lab: Lab, tmp_path: Path) -> None:
        lab = shared_lab
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

    def test_agents_refuse_a_relay_presenting_another_key_until_the_pinned_one_is_back(
        self, shared_lab: Lab
    ) -> None:
        lab = shared_lab
        three = lab.plan.site(3)
        wait_until(lambda: ping_ok(lab, "vm1", three.vm_ip), 20, "vm1 reaches vm3 through the relay")
        key_file = lab.plan.relay_state_dir / KEY_FILE
        pinned = key_file.read_bytes()
        gw3_log = log_path(lab.state, "gw3")
        # An impostor on the relay's address: another key than the one the coordinator announced.
        assert lab.kill("relay")
        write_private(key_file, generate_key())
        try:
            lab.start("relay")
            lab.wait_relay()
            wait_until(lambda: 'event="relay refused"' in gw3_log.read_text(), 20, "gw3 to refuse the relay")
            line = next(x for x in gw3_log.read_text().splitlines() if 'event="relay refused"' in x)
            assert f"the netmap pins {relay_pin_of(pinned)}" in line
            assert not ping_ok(lab, "vm1", three.vm_ip)  # no relay to carry it, and no ticket handed over
        finally:
            lab.kill("relay")
            write_private(key_file, pinned)
            lab.start("relay")
            lab.wait_relay()
        wait_until(
            lambda: ping_ok(lab, "vm1", three.vm_ip), 40, "vm1 to reach vm3 again over the pinned relay"
        )


def relay_pin_of(key: bytes) -> str:
    return str(RelayIdentity.from_key(key).pin)
