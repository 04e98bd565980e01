"""Self-signed certificates over P-256 keys, for identities clients pin by key (wgmesh/pins.py).

The coordinator's identity and the relays' are made here the one way: the certificate only carries the
key, so it never expires (RFC 5280 4.1.2.5's 99991231235959Z: clients check the pinned key, not dates)
and starts a day early (a client clock a little behind still agrees).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wgmesh.errors import ValidationError

NO_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def generate_key() -> bytes:
    """A new ECDSA P-256 private key, PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(key_pem: bytes, source: str) -> ec.EllipticCurvePrivateKey:
    """A PEM P-256 private key, or ValidationError naming `source`."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ValidationError(f"{source} is not a PEM private key", code="invalid_key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValidationError(f"{source} is not an ECDSA P-256 key", code="invalid_key")
    return key


def certificate(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    names: Sequence[x509.GeneralName] = (),
    now: datetime | None = None,
) -> x509.Certificate:
    """A self-signed leaf certificate for `key`; `names` become its subject alternative names, for clients
    that verify a name (clients checking the pin need none)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before((now or datetime.now(UTC)) - timedelta(days=1))
        .not_valid_after(NO_EXPIRY)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256())
