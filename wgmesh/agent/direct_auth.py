"""Who is at the other end of a direct TCP link (agent/direct_tcp.py): pure, no sockets.

The dialing agent checks the listener's TLS key against the pin the netmap gives for the peer, so it only
ever talks to that peer. The listener then needs to know which peer dialed: it sends a fresh challenge,
and the dialer answers with a MAC of it under a secret only the two agents hold, derived from their
WireGuard keys (X25519 of one's private key and the other's public key gives both the same value). The
answer names both node ids and the listener's pin, so it cannot be replayed to another listener or for
another node; the challenge is fresh per connection, so it cannot be replayed to the same one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from wgmesh import keys
from wgmesh.pins import Pin

CHALLENGE_PREFIX = "c."
"""A listener's hello carries `c.` and the challenge; a dialer's hello carries its proof alone."""
CHALLENGE_BYTES = 32
_LABEL = b"wgmesh direct tcp v1"
_IDS = struct.Struct(">II")


def pair_secret(own_private_key: str, peer_public_key: str) -> bytes:
    """The secret two agents share for their direct links: the same on both ends, known to no one else (the
    coordinator included: it never holds an agent's private key). ValueError for a key that is not one."""
    private = X25519PrivateKey.from_private_bytes(keys.decode_key(own_private_key))
    shared = private.exchange(X25519PublicKey.from_public_bytes(keys.decode_key(peer_public_key)))
    # Never the raw X25519 output as a key: derived under a label of its own, apart from WireGuard's use.
    return hmac.new(shared, _LABEL, hashlib.sha256).digest()


def new_challenge() -> str:
    """A listener's hello text: the prefix and 32 random bytes, base64url (what hello tickets may hold)."""
    return CHALLENGE_PREFIX + _b64(secrets.token_bytes(CHALLENGE_BYTES))


def challenge_of(text: str) -> bytes | None:
    """The challenge in a listener's hello, or None when the text is not one."""
    if not text.startswith(CHALLENGE_PREFIX):
        return None
    raw = _unb64(text[len(CHALLENGE_PREFIX) :])
    return raw if raw is not None and len(raw) == CHALLENGE_BYTES else None


def proof(secret: bytes, challenge: bytes, *, dialer: int, listener: int, listener_pin: Pin) -> str:
    """The dialer's answer to `challenge` (its hello text)."""
    message = _LABEL + challenge + _IDS.pack(dialer, listener) + listener_pin.digest
    return _b64(hmac.new(secret, message, hashlib.sha256).digest())


def proves(
    answer: str, secret: bytes, challenge: bytes, *, dialer: int, listener: int, listener_pin: Pin
) -> bool:
    """Whether `answer` is the dialer's proof for this challenge (constant time)."""
    expected = proof(secret, challenge, dialer=dialer, listener=listener, listener_pin=listener_pin)
    return hmac.compare_digest(answer.encode("ascii", "replace"), expected.encode("ascii"))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
