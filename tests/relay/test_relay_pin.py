"""Relays serve TLS with a key of their own by default, and the agent's shim holds them to the pinned key.

Real `wgmesh-relay` processes on loopback and the real shim on its own event loop; the "WireGuard" side is
a UDP socket (the shim never needs more than its port here: nothing is forwarded).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest
from relay_harness import RELAY_BIN, Keys, RelayProcess, nodes, relay_process, wait_until
from test_relay_tls import self_signed

from wgmesh.agent.netloop import NetLoop
from wgmesh.agent.shim import RelayLink, RelayShim
from wgmesh.models import RelayGrant, RelayInfo
from wgmesh.relay.identity import KEY_FILE, RelayIdentity, generate_key


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def printed_pin(state_dir: Path) -> str:
    done = subprocess.run(
        [RELAY_BIN, "pin", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_relay_makes_its_key_0600_serves_tls_and_keeps_its_pin_across_restarts(
    keys: Keys, tmp_path: Path, umask_022: None
) -> None:
    relay = RelayProcess(tmp_path / "relay.log", ("--coordinator-key", keys.public))
    relay.start()
    try:
        first = relay.pin
        assert first is not None and "tls=True" in relay.text()
        with nodes(relay, 2) as (a, b):  # pinned TLS, as the shim connects
            a.hello(1, keys.ticket(1))
            b.hello(2, keys.ticket(2))
    finally:
        relay.stop()
    key_file = relay.state_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # it holds the relay's private key
    assert stat.S_IMODE(relay.state_dir.stat().st_mode) == 0o700
    assert printed_pin(relay.state_dir) == first
    relay.start()
    try:
        assert relay.pin == first
    finally:
        relay.stop()


def test_plain_tcp_only_when_asked(keys: Keys, tmp_path: Path) -> None:
    with relay_process(tmp_path / "relay.log", "--coordinator-key", keys.public, "--plain-tcp") as relay:
        assert relay.pin is None and "tls=False" in relay.text()
        assert not (relay.state_dir / KEY_FILE).exists()
        with nodes(relay.port, 1) as (a,):
            assert a.hello(1, keys.ticket(1)).node_id == 1


class Shim:
    """The agent's shim on its own loop, for one node."""

    def __init__(self, stack: ExitStack, *, ca_file: Path | None = None) -> None:
        wg = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        wg.bind(("127.0.0.1", 0))
        stack.callback(wg.close)
        self.net = NetLoop()
        self.shim = RelayShim(self.net.loop, 1, wg.getsockname()[1], lambda _s, _d: None, ca_file=ca_file)
        self.net.start()
        stack.callback(self.net.stop)
        stack.callback(lambda: self.net.call(self.shim._stop))

    def use(self, keys: Keys, info: RelayInfo) -> RelayLink:
        grant = RelayGrant(
            relays=[info], ticket=keys.ticket(1), expires_at=datetime.now(UTC), coordinator_key=keys.public
        )
        self.net.call(lambda: self.shim._configure(grant))
        return self.shim.links[info.id]


def test_shim_refuses_a_relay_presenting_another_key_before_sending_its_ticket(
    keys: Keys, relay: RelayProcess
) -> None:
    assert relay.pin is not None
    stranger = str(RelayIdentity.from_key(generate_key()).pin)  # say, the relay's address was taken over
    with ExitStack() as stack:
        side = Shim(stack)
        link = side.use(keys, RelayInfo(id="r1", url=relay.url, pin=stranger))
        wait_until(lambda: link.error is not None, 10, "the shim to refuse the relay")
        assert link.error == f"refused: relay presented key {relay.pin}; the netmap pins {stranger}"
        assert not link.up and side.shim.active() is None  # the path controller sees no relay
        assert side.shim.counters.refused_relays["r1"] >= 1
        assert "node=1" not in relay.text()  # no hello reached the relay: the ticket was never sent
        # The same shim and relay with the right pin: connected.
        link = side.use(keys, RelayInfo(id="r1", url=relay.url, pin=relay.pin))
        wait_until(lambda: link.up, 10, "the shim to connect to the pinned relay")
        assert link.error is None and side.shim.active() is link


def test_unpinned_tls_relay_is_verified_by_the_ca_store(keys: Keys, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    args = ("--coordinator-key", keys.public, "--tls-cert", str(cert), "--tls-key", str(key))
    with relay_process(tmp_path / "relay.log", *args) as relay, ExitStack() as stack:
        info = RelayInfo(id="r", url=f"tls://localhost:{relay.port}")
        untrusted = Shim(stack).use(keys, info)
        wait_until(lambda: untrusted.error is not None, 10, "the shim to refuse an unknown CA")
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.error and not untrusted.up
        trusted = Shim(stack, ca_file=cert).use(keys, info)
        wait_until(lambda: trusted.up, 10, "the shim to connect with the relay's CA")
