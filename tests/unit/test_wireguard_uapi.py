"""The UAPI text protocol: what we send for each operation, how answers are read, errno checks."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from wgmesh import keys
from wgmesh.agent.plan import (
    AddPeer,
    RemovePeer,
    ReplaceAllowedIps,
    SetEndpoint,
    SetKeepalive,
    SetListenPort,
    SetPrivateKey,
    SetPsk,
)
from wgmesh.agent.system.wireguard_uapi import UapiSocket, UserspaceBackend, encode_set, parse_get
from wgmesh.agent.wgstate import PeerSpec, PrivateKey
from wgmesh.errors import BackendError
from wgmesh.values import Endpoint

ep = Endpoint.parse

PEER = keys.generate_keypair().public_key
PEER_HEX = keys.key_to_hex(PEER)


def test_add_peer_sends_everything_and_replaces_allowed_ips() -> None:
    psk = keys.generate_psk()
    spec = PeerSpec(PEER, ("100.96.0.2/32", "10.2.0.0/24"), ep("198.18.0.12:51820"), psk, 25)
    assert encode_set([AddPeer(spec)]) == [
        [
            f"public_key={PEER_HEX}",
            f"preshared_key={keys.key_to_hex(psk)}",
            "endpoint=198.18.0.12:51820",
            "persistent_keepalive_interval=25",
            "replace_allowed_ips=true",
            "allowed_ip=10.2.0.0/24",
            "allowed_ip=100.96.0.2/32",
        ]
    ]


def test_endpoint_update_never_mentions_allowed_ips() -> None:
    (lines,) = encode_set([SetEndpoint(PEER, ep("[fd00::1]:51820"))])
    assert lines == [f"public_key={PEER_HEX}", "update_only=true", "endpoint=[fd00::1]:51820"]


def test_updates_use_update_only_and_clearing_uses_zero() -> None:
    (lines,) = encode_set(
        [
            ReplaceAllowedIps(PEER, ("10.2.0.0/24",)),
            SetPsk(PEER, None),
            SetKeepalive(PEER, None),
            RemovePeer(PEER),
        ]
    )
    head = [f"public_key={PEER_HEX}", "update_only=true"]
    assert lines == [
        *head,
        "replace_allowed_ips=true",
        "allowed_ip=10.2.0.0/24",
        *head,
        "preshared_key=" + "0" * 64,
        *head,
        "persistent_keepalive_interval=0",
        f"public_key={PEER_HEX}",
        "remove=true",
    ]


def test_device_lines_start_a_transaction() -> None:
    private = PrivateKey(keys.generate_keypair().private_key)
    transactions = encode_set([RemovePeer(PEER), SetListenPort(51821), SetPrivateKey(private)])
    assert transactions == [
        [f"public_key={PEER_HEX}", "remove=true"],
        ["listen_port=51821", f"private_key={keys.key_to_hex(private.reveal())}"],
    ]


def test_large_updates_are_chunked_and_continuations_do_not_replace() -> None:
    peers = [
        PeerSpec(
            keys.generate_keypair().public_key,
            (f"100.96.{i // 250}.{i % 250 + 1}/32", f"10.{i}.0.0/24" if i < 256 else "fd00::/64"),
        )
        for i in range(300)
    ]
    big = PeerSpec(PEER, tuple(f"10.200.{i // 256}.{i % 256}/32" for i in range(450)))
    transactions = encode_set([*(AddPeer(p) for p in peers), AddPeer(big)], chunk_lines=100)
    assert all(len(t) <= 100 for t in transactions)
    lines = [line for t in transactions for line in t]
    assert sum(line.startswith("allowed_ip=") for line in lines) == 300 * 2 + 450
    # the big peer: one replace, then additions that only update
    big_parts = [i for i, line in enumerate(lines) if line == f"public_key={PEER_HEX}"]
    assert len(big_parts) == 5
    assert lines.count("replace_allowed_ips=true") == 301
    for index in big_parts[1:]:
        assert lines[index + 1] == "update_only=true"


SAMPLE = """private_key={priv}
listen_port=51820
public_key={peer}
preshared_key={zero}
protocol_version=1
endpoint=198.18.0.12:51820
last_handshake_time_sec=1700000000
last_handshake_time_nsec=500000000
tx_bytes=1000
rx_bytes=2000
persistent_keepalive_interval=25
allowed_ip=100.96.0.2/32
allowed_ip=10.2.0.0/24
public_key={peer2}
preshared_key={psk}
protocol_version=1
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=0
rx_bytes=0
persistent_keepalive_interval=0
errno=0

"""


def test_parse_get_reads_device_peers_and_counters() -> None:
    pair = keys.generate_keypair()
    peer2 = keys.generate_keypair().public_key
    psk = keys.generate_psk()
    text = SAMPLE.format(
        priv=keys.key_to_hex(pair.private_key),
        peer=PEER_HEX,
        peer2=keys.key_to_hex(peer2),
        zero="0" * 64,
        psk=keys.key_to_hex(psk),
    )
    observed = parse_get(text)
    assert observed.public_key == pair.public_key
    assert observed.spec.listen_port == 51820
    first = observed.spec.peers[PEER]
    assert first == PeerSpec(PEER, ("10.2.0.0/24", "100.96.0.2/32"), ep("198.18.0.12:51820"), None, 25)
    second = observed.spec.peers[peer2]
    assert (second.endpoint, second.psk, second.keepalive, second.allowed_ips) == (None, psk, None, ())
    stats = observed.stats[PEER]
    assert (stats.rx_bytes, stats.tx_bytes, stats.endpoint) == (2000, 1000, ep("198.18.0.12:51820"))
    assert stats.last_handshake is not None and stats.last_handshake.timestamp() == 1700000000.5
    assert observed.stats[peer2].last_handshake is None


class FakeWireguardGo:
    """A UNIX socket that answers like wireguard-go, recording each request."""

    def __init__(self, path: Path, answers: list[str]) -> None:
        self.answers = answers
        self.requests: list[str] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            conn, _ = self.server.accept()
            with conn:
                data = b""
                while not data.endswith(b"\n\n"):
                    data += conn.recv(65536)
                self.requests.append(data.decode())
                answer = self.answers.pop(0).encode()
                # answer in two pieces, as a socket may deliver it
                conn.sendall(answer[:5])
                conn.sendall(answer[5:])


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "wgt0.sock"


def test_set_checks_errno(sock_path: Path) -> None:
    fake = FakeWireguardGo(sock_path, ["errno=0\n\n", "errno=22\n\n"])
    uapi = UapiSocket(sock_path, timeout=2)
    uapi.set(["listen_port=1"])
    assert fake.requests[0] == "set=1\nlisten_port=1\n\n"
    with pytest.raises(BackendError, match="errno=22"):
        uapi.set(["listen_port=2"])


def test_get_reads_until_the_blank_line(sock_path: Path) -> None:
    FakeWireguardGo(sock_path, ["listen_port=51820\nerrno=0\n\n", "errno=1\n\n"])
    uapi = UapiSocket(sock_path, timeout=2)
    assert parse_get(uapi.get()).spec.listen_port == 51820
    with pytest.raises(BackendError, match="errno=1"):
        uapi.get()


def test_missing_socket_is_a_backend_error(tmp_path: Path) -> None:
    uapi = UapiSocket(tmp_path / "nothing.sock", timeout=1)
    with pytest.raises(BackendError, match="UAPI socket"):
        uapi.get()
    assert uapi.server_pid() is None


def test_a_failed_start_is_tried_once_more_and_reports_wireguard_gos_own_reason(tmp_path: Path) -> None:
    """A stand-in for wireguard-go that fails as it does (its reason on stderr, exit 1): the agent tries
    twice, then says why, and leaves nothing behind."""
    calls = tmp_path / "calls"
    program = tmp_path / "fake-wireguard-go"
    program.write_text(
        f"#!/bin/sh\necho started >> {calls}\n"
        'echo "ERROR: (x) UAPI listen error: unix socket in use" >&2\nexit 1\n'
    )
    program.chmod(0o755)
    backend = UserspaceBackend("wgt-fail0", socket_dir=tmp_path / "run", program=str(program))
    with pytest.raises(BackendError) as failed:
        backend.ensure_up(PrivateKey(keys.generate_keypair().private_key), 51820)
    assert failed.value.code == "wireguard_go_failed"
    assert "exited with status 1 while starting: ERROR: (x) UAPI listen error: unix socket in use" in str(
        failed.value.message
    )
    assert calls.read_text().splitlines() == ["started", "started"]
    assert list((tmp_path / "run").iterdir()) == []  # nothing left in the shared socket directory
