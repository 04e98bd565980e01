"""Public-key pins: parsing, formatting, and what they match."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from wgmesh.errors import ValidationError
from wgmesh.pins import Pin


def certificate(key: ec.EllipticCurvePrivateKey, days: int = 1) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pin-test")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def test_text_round_trip_and_case() -> None:
    pin = Pin.of_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    text = str(pin)
    assert text.startswith("sha256:") and len(text) == 7 + 64
    assert Pin.parse(text) == pin
    assert Pin.parse("  SHA256:" + text[7:].upper()) == pin


@pytest.mark.parametrize(
    "text", ["", "sha256:", "sha1:" + "0" * 64, "sha256:" + "0" * 63, "sha256:" + "g" * 64, "0" * 64]
)
def test_malformed_pins_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Pin.parse(text)
    assert caught.value.code == "invalid_pin"
    assert "sha256:" in caught.value.message


def test_a_renewed_certificate_over_the_same_key_keeps_its_pin() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    first, renewed = certificate(key, 1), certificate(key, 90)
    assert first.fingerprint(hashes.SHA256()) != renewed.fingerprint(hashes.SHA256())
    assert Pin.of_certificate(first) == Pin.of_certificate(renewed.public_bytes(Encoding.DER))
    assert Pin.of_certificate(first).matches(Pin.of_key(key.public_key()))


def test_another_key_does_not_match() -> None:
    one = Pin.of_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    other = Pin.of_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert not one.matches(other)
    with pytest.raises(ValueError):
        Pin(b"short")
