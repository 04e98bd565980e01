"""WireGuard key material: X25519 key pairs and preshared keys, in WireGuard's base64 form."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from wgmesh.errors import ValidationError

KEY_LEN = 32


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A WireGuard key pair, both halves base64-encoded."""

    private_key: str
    public_key: str

    def __repr__(self) -> str:
        # Keeps the private half out of logs and tracebacks.
        return f"KeyPair(public_key={self.public_key!r})"


def decode_key(text: str) -> bytes:
    """Decode a base64 WireGuard key, insisting on exactly 32 bytes."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError("key is not valid base64", code="invalid_key") from exc
    if len(raw) != KEY_LEN:
        raise ValidationError(f"key must be 32 bytes, got {len(raw)}", code="invalid_key")
    # Unused low bits in the last character give one key several spellings; WireGuard refuses
    # all but the canonical one, and so must we, or a duplicate key slips past a string compare.
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValidationError("key is not in canonical base64 form", code="invalid_key")
    return raw


def encode_key(raw: bytes) -> str:
    """Base64-encode 32 raw key bytes."""
    if len(raw) != KEY_LEN:
        raise ValidationError(f"key must be 32 bytes, got {len(raw)}", code="invalid_key")
    return base64.b64encode(raw).decode("ascii")


def generate_keypair() -> KeyPair:
    """A fresh X25519 key pair."""
    private = X25519PrivateKey.generate()
    raw_private = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return KeyPair(encode_key(raw_private), encode_key(raw_public))


def public_key_of(private_key: str) -> str:
    """Derive the public key of a base64 private key."""
    private = X25519PrivateKey.from_private_bytes(decode_key(private_key))
    return encode_key(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def generate_psk() -> str:
    """A fresh random preshared key."""
    return encode_key(os.urandom(KEY_LEN))


def derive_pair_psk(master: bytes, node_a: int, node_b: int, generation: int = 0) -> str:
    """The preshared key of a node pair, derived from the coordinator's master secret.

    Deriving instead of storing keeps the pair table sparse (no N² rows); bumping the pair's
    generation rotates its key.
    """
    low, high = sorted((node_a, node_b))
    info = f"wgmesh-psk:{low}:{high}:{generation}".encode()
    return encode_key(HKDF(algorithm=SHA256(), length=KEY_LEN, salt=None, info=info).derive(master))


def derive_relay_signing_key(master: bytes) -> str:
    """The coordinator's Ed25519 relay-ticket signing key (base64 raw seed), derived from the master secret.

    Derived rather than stored: every coordinator sharing the database signs with the same key, and no
    schema change or extra secret on disk is needed; the HKDF label keeps it apart from the pair PSKs.
    """
    return encode_key(
        HKDF(algorithm=SHA256(), length=KEY_LEN, salt=None, info=b"wgmesh-relay-ticket-key:1").derive(master)
    )


def fingerprint(public_key: str) -> str:
    """The short form of a public key that logs may show."""
    return public_key[:8]


def key_to_hex(key: str) -> str:
    """A base64 key in the hex form of WireGuard's UAPI."""
    return decode_key(key).hex()


def hex_to_key(text: str) -> str:
    """A UAPI hex key back in base64."""
    return encode_key(bytes.fromhex(text))


def hash_secret(secret: str) -> str:
    """SHA-256 of a high-entropy secret; random 32-byte tokens need no slow hash."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)
