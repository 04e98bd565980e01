"""A relay's TLS identity: its key file, its pin, the pin in RelayInfo and `--announce-relay`, and the
verdict on a presented certificate."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import ValidationError as PydanticValidationError

from wgmesh.coordinator.main import parse_relay
from wgmesh.errors import ValidationError
from wgmesh.models import RelayInfo
from wgmesh.pins import Pin
from wgmesh.relay.identity import KEY_FILE, RelayIdentity, generate_key, load_or_create_key, refusal

PIN = "sha256:" + "0123456789abcdef" * 4


def test_key_file_is_made_0600_in_a_0700_directory_under_umask_022(tmp_path: Path) -> None:
    path = tmp_path / "state" / KEY_FILE
    umask = os.umask(0o022)  # what `init` or a shell would run with: files 0644 unless made otherwise
    try:
        key = load_or_create_key(path)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_key(path) == key  # kept, not remade
    assert RelayIdentity.from_key(key).pin == RelayIdentity.from_key(path.read_bytes()).pin


def test_identity_pin_is_the_sha256_of_the_keys_spki_and_outlives_its_certificate() -> None:
    key = generate_key()
    first, second = RelayIdentity.from_key(key), RelayIdentity.from_key(key)
    assert first.cert_pem != second.cert_pem  # a certificate made afresh at each start…
    assert first.pin == second.pin  # …over the same key
    private = serialization.load_pem_private_key(key, password=None)
    assert first.pin == Pin.of_key(private.public_key())
    cert = x509.load_pem_x509_certificate(first.cert_pem)
    assert cert.public_key().public_numbers() == private.public_key().public_numbers()  # type: ignore[union-attr]
    assert str(first.pin).startswith("sha256:") and len(str(first.pin)) == 7 + 64


def test_identity_refuses_what_is_not_a_p256_key() -> None:
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValidationError, match="relay key file x is not an ECDSA P-256 key"):
        RelayIdentity.from_key(ed, source="relay key file x")
    with pytest.raises(ValidationError, match="is not a PEM private key"):
        RelayIdentity.from_key(b"-----BEGIN nonsense-----")


def test_refusal_names_the_presented_and_the_pinned_key() -> None:
    identity = RelayIdentity.from_key(generate_key())
    der = x509.load_pem_x509_certificate(identity.cert_pem).public_bytes(serialization.Encoding.DER)
    assert refusal(der, identity.pin) is None
    other = Pin.parse(PIN)
    assert refusal(der, other) == f"relay presented key {identity.pin}; the netmap pins {other}"
    assert refusal(None, other) == f"relay presented no certificate; the netmap pins {other}"
    assert refusal(b"not a certificate", other) == (
        f"relay presented an unreadable certificate; the netmap pins {other}"
    )


def test_relay_info_takes_a_pin_in_one_spelling_and_only_for_tls() -> None:
    info = RelayInfo(id="r", url="tls://198.18.0.1:8443", pin=PIN.upper().replace("SHA256", "sha256"))
    assert info.pin == PIN
    assert RelayInfo(id="r", url="tls://198.18.0.1:8443").pin is None
    assert RelayInfo.model_validate({"id": "r", "url": "tcp://198.18.0.1:8443"}).pin is None  # older grants
    with pytest.raises(PydanticValidationError, match="a pin needs tls://"):
        RelayInfo(id="r", url="tcp://198.18.0.1:8443", pin=PIN)
    for bad in ("sha256:" + "ab" * 31, "sha256:" + "zz" * 32, "sha1:" + "ab" * 32, "ab" * 32):
        with pytest.raises(PydanticValidationError, match="pin"):
            RelayInfo(id="r", url="tls://198.18.0.1:8443", pin=bad)


def test_announce_relay_reads_the_pin_after_a_hash() -> None:
    assert parse_relay(f"eu=tls://198.18.0.1:8443#{PIN}") == RelayInfo(
        id="eu", url="tls://198.18.0.1:8443", pin=PIN
    )
    assert parse_relay(f"tls://relay.example.net:443#{PIN}") == RelayInfo(
        id="relay.example.net:443", url="tls://relay.example.net:443", pin=PIN
    )
    assert parse_relay("tls://198.18.0.1:443").pin is None
    with pytest.raises(ValidationError, match="64 hex digits"):
        parse_relay("tls://198.18.0.1:443#sha256:abc")
    with pytest.raises(ValidationError, match="a pin needs tls://"):
        parse_relay(f"tcp://198.18.0.1:443#{PIN}")
