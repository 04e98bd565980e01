"""Public-key pins: `sha256:<hex>` of a key's DER SubjectPublicKeyInfo, as kubeadm's CA hash pins.

A pin names a key, not a certificate, so a certificate renewed over the same key (or issued by the same
CA, when the pin names the CA's key) keeps matching. The coordinator's identity and the relays' keys are
pinned this way. A pin of a CA's key proves something only for a chain that TLS verification has already
checked against that CA (a forger can present the CA's public certificate beside a leaf of its own); a
pin of a self-signed leaf's key is checked against the leaf alone.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from wgmesh.errors import ValidationError

PREFIX = "sha256:"
PIN_LINE = "coordinator pin: "
"""How `wgmesh-coordinator init` prints the coordinator's pin (the lab reads it from there): here, not
in the coordinator's modules, so that the lab and the CLI that carries it need not import those."""
_HEX_LENGTH = 64


@dataclass(frozen=True)
class Pin:
    """The SHA-256 of one public key's DER SubjectPublicKeyInfo."""

    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != hashlib.sha256().digest_size:
            raise ValueError("a pin is a 32-byte SHA-256 digest")

    @classmethod
    def parse(cls, text: str) -> Pin:
        """`sha256:` and 64 hex digits (either case) into a pin, or ValidationError saying what is wrong."""
        body = text.strip()
        if not body.lower().startswith(PREFIX):
            raise ValidationError(f"pin {text!r} must start with {PREFIX}", code="invalid_pin")
        digits = body[len(PREFIX) :]
        if len(digits) != _HEX_LENGTH:
            raise ValidationError(f"pin {text!r} must be {PREFIX} and 64 hex digits", code="invalid_pin")
        try:
            return cls(bytes.fromhex(digits))
        except ValueError:
            raise ValidationError(
                f"pin {text!r} must be {PREFIX} and 64 hex digits", code="invalid_pin"
            ) from None

    @classmethod
    def of_key(cls, key: PublicKeyTypes) -> Pin:
        """The pin of a public key."""
        spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return cls(hashlib.sha256(spki).digest())

    @classmethod
    def of_certificate(cls, certificate: x509.Certificate | bytes) -> Pin:
        """The pin of a certificate's public key (the certificate as an object or DER bytes)."""
        cert = (
            certificate
            if isinstance(certificate, x509.Certificate)
            else x509.load_der_x509_certificate(certificate)
        )
        return cls.of_key(cert.public_key())

    def matches(self, other: Pin) -> bool:
        """Whether two pins name the same key (constant time)."""
        return hmac.compare_digest(self.digest, other.digest)

    def __str__(self) -> str:
        return PREFIX + self.digest.hex()
