"""The real relay speaks the same protocol inside TLS with a certificate from --tls-cert/--tls-key."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from relay_harness import Closed, Keys, RelayProcess, nodes, relay_process

from wgmesh.relay import protocol as p
from wgmesh.relay.identity import RelayIdentity, generate_key
from wgmesh.secure_files import write_private


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A P-256 certificate for localhost and 127.0.0.1 and its key, as PEM files (key 0600)."""
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    identity = RelayIdentity.from_key(generate_key(), names=names)
    cert_path, key_path = directory / "relay.crt", directory / "relay.key"
    cert_path.write_bytes(identity.cert_pem)
    write_private(key_path, identity.key_pem)
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_relay(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelayProcess, Path]]:
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(tmp)
    with relay_process(
        tmp / "relay.log", "--coordinator-key", keys.public, "--tls-cert", str(cert), "--tls-key", str(key)
    ) as r:
        yield r, cert


def test_hello_and_forwarding_over_tls(tls_relay: tuple[RelayProcess, Path], keys: Keys) -> None:
    relay, cert = tls_relay
    context = ssl.create_default_context(cafile=str(cert))  # verifies the chain and the name
    with nodes(relay, 2, tls=context) as (a, b):
        assert a.hello(1, keys.ticket(1)).node_id == 1
        b.hello(2, keys.ticket(2))
        a.send(*[p.Data(2, bytes([i]) * 1400) for i in range(50)])
        assert [b.data() for _ in range(50)] == [p.Data(1, bytes([i]) * 1400) for i in range(50)]
        b.send(p.Data(1, b"back over tls"))
        assert a.data() == p.Data(2, b"back over tls")
    assert "tls=True" in relay.text()


def test_plain_tcp_client_gets_no_frames_from_a_tls_relay(
    tls_relay: tuple[RelayProcess, Path], keys: Keys
) -> None:
    relay, _ = tls_relay
    with nodes(relay.port, 1) as (a,):
        a.send(p.Hello(node_id=3, ticket=keys.ticket(3)))
        # the relay ends the failed handshake (with a TLS alert, which is no frame, or a reset)
        with pytest.raises((Closed, p.ProtocolError)):
            a.recv(timeout=3)
