"""wgmesh.trust: which presented chains prove a pin, and join tokens that carry one."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding
from pki import issue, make_ca

from wgmesh import selfsigned, trust
from wgmesh.api_client import ApiClient
from wgmesh.coordinator import identity
from wgmesh.errors import IdentityError, ValidationError
from wgmesh.join_token import JoinToken, with_identity
from wgmesh.pins import Pin
from wgmesh.trust import proven_pin


def test_a_self_signed_identity_proves_the_pin_of_its_own_key_only() -> None:
    made = identity.generate()
    der = [made.chain[0].public_bytes(Encoding.DER)]
    assert proven_pin(der, "anything", [made.pin]) == made.pin  # names do not matter for a key pin
    other = identity.generate()
    assert proven_pin(der, "anything", [other.pin]) is None
    # the announced next key is accepted beside the pinned one
    assert proven_pin(der, "x", [other.pin, made.pin]) == made.pin


def test_a_ca_pin_needs_a_leaf_that_verifiably_chains_to_that_ca_for_the_host() -> None:
    ca = make_ca()
    leaf = issue(ca, "127.0.0.1")
    pin = Pin.of_certificate(ca.cert)
    assert proven_pin([leaf.der(), ca.der()], "127.0.0.1", [pin]) == pin
    # another name than the certificate's
    assert proven_pin([leaf.der(), ca.der()], "10.0.0.1", [pin]) is None
    # a forger presents the CA's public certificate beside a leaf it signed itself
    forged = issue(ca, "127.0.0.1", signer=make_ca("forger").key)
    assert proven_pin([forged.der(), ca.der()], "127.0.0.1", [pin]) is None
    # the CA certificate not presented: nothing to check the leaf against
    assert proven_pin([leaf.der()], "127.0.0.1", [pin]) is None


def test_a_join_token_carries_pin_and_urls_and_a_bare_secret_still_parses() -> None:
    pin = Pin.parse("sha256:" + "0f" * 32)
    secret = "wgt_12.abcdefghijklmnopqrstuvwxyz-_0123"
    text = with_identity(secret, pin, ["https://198.51.100.1:8080", "https://[2001:db8::1]:443"])
    assert "~" in text and " " not in text
    parsed = JoinToken.parse(text)
    assert (parsed.secret, parsed.pin, parsed.urls) == (
        secret,
        pin,
        ("https://198.51.100.1:8080", "https://[2001:db8::1]:443"),
    )
    assert JoinToken.parse(secret) == JoinToken(secret)
    assert secret not in repr(parsed)
    with pytest.raises(ValidationError, match="damaged"):
        JoinToken.parse("wgmesh1~AAAA~~" + secret)  # a 3-byte pin
    with pytest.raises(ValidationError, match="damaged"):
        JoinToken.parse("wgmesh1~" + secret)


def _unreadable_by_cryptography(der: bytes) -> bytes:
    """The certificate with its serial's length in long form (02 81 NN): OpenSSL loads it, `cryptography`
    refuses it as non-minimal DER."""
    assert der[0] == 0x30 and der[1] == 0x82 and der[4] == 0x30 and der[5] == 0x82
    at = 8 + 5  # outer and TBS headers, then the version field a0 03 02 01 02
    assert der[8:at] == bytes.fromhex("a003020102") and der[at] == 0x02 and der[at + 1] < 0x80
    bad = bytearray(der[:at]) + bytes([0x02, 0x81, der[at + 1]]) + der[at + 2 :]
    bad[2:4] = struct.pack(">H", struct.unpack(">H", der[2:4])[0] + 1)
    bad[6:8] = struct.pack(">H", struct.unpack(">H", der[6:8])[0] + 1)
    return bytes(bad)


def test_an_unreadable_certificate_is_refused_with_one_line_before_the_token_is_sent(tmp_path: Path) -> None:
    key_pem = selfsigned.generate_key()
    names = [x509.DNSName(f"host{i}.example") for i in range(12)]  # a TBS over 255 bytes: 82 LL LL lengths
    cert = selfsigned.certificate(selfsigned.load_key(key_pem, "test key"), "mangled", names=names)
    bad = _unreadable_by_cryptography(cert.public_bytes(serialization.Encoding.DER))
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(bad)
    (tmp_path / "cert.pem").write_text(ssl.DER_cert_to_PEM_cert(bad))
    (tmp_path / "key.pem").write_bytes(key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")  # OpenSSL takes it
    received: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                try:
                    with server.wrap_socket(conn, server_side=True) as tls:
                        received.append(tls.recv(4096))
                except (OSError, ssl.SSLError):
                    received.append(b"")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = ApiClient(
            f"https://127.0.0.1:{port}",
            bearer="SECRET-TOKEN",
            user_agent="test",
            tls=trust.pinned(lambda: [Pin(bytes(32))]),
        )
        try:
            with pytest.raises(IdentityError) as refused:
                client.request("GET", "/api/v1/netmap")
        finally:
            client.close()
        thread.join(10)
    assert "cannot be read" in refused.value.message and "\n" not in refused.value.message
    assert b"SECRET-TOKEN" not in b"".join(received)


def test_a_pinned_context_refuses_memory_bio_connections() -> None:
    context = trust.pinned(lambda: [Pin(bytes(32))])
    with pytest.raises(NotImplementedError):
        context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="x")
