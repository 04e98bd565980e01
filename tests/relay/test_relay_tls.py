"""The real relay speaks the same protocol inside TLS with a certificate from --tls-cert/--tls-key."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from relay_harness import Closed, Keys, RelayProcess, nodes, relay_process

from wgmesh.relay import protocol as p


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A P-256 certificate for localhost and 127.0.0.1, valid for a day, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wgmesh test relay")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay.crt", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
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
