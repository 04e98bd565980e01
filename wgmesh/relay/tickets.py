"""Relay tickets: the coordinator signs (Ed25519) who may use a relay and until when; relays verify offline.

A ticket is base64url (no padding) of `payload ‖ signature`; the payload layout is in docs/relay-protocol.md.
The signature covers a domain-separation prefix plus the payload, so no other Ed25519 message can pass as one.
Format 2 names the relays a ticket is for; format 1 (before issue 16) named one or, empty, any relay.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from wgmesh.errors import AuthError, ValidationError

TICKET_FORMAT = 2
"""What coordinators issue: the relays a ticket is for, by id. Relays also read format 1."""
LEGACY_FORMAT = 1
MAX_AUDIENCE = 64
"""Bytes of one relay id."""
MAX_RELAYS_BYTES = 256
"""Bytes of all relay ids with their length bytes: keeps a ticket under the hello's 512 characters."""
MAX_TTL = 30 * 24 * 3600
"""A month: tickets must outlive a coordinator outage but still expire, since expiry is the revocation."""
DEFAULT_LEEWAY = 60.0
"""Seconds a ticket's issue time may lie in the relay's future: coordinator and relay clocks differ."""

_DOMAIN = b"wgmesh-relay-ticket\x00"
_FIXED = struct.Struct(">BIQQB")
"""format, node id, issued, expires, then (format 1) the audience's length or (format 2) the relay count."""
_SIGNATURE = 64
_MIN_RAW = _FIXED.size + _SIGNATURE
_MAX_RAW = _MIN_RAW + max(MAX_AUDIENCE, MAX_RELAYS_BYTES)
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class TicketError(AuthError):
    """A relay ticket that may not be used."""

    code = "ticket_invalid"


class TicketMalformedError(TicketError):
    """Not a ticket at all: bad base64url, wrong length, unknown format."""

    code = "ticket_malformed"


class TicketForgedError(TicketError):
    """The signature does not verify under the coordinator's key (forged or altered)."""

    code = "ticket_forged"


class TicketExpiredError(TicketError):
    """The ticket's expiry has passed."""

    code = "ticket_expired"


class TicketNotYetValidError(TicketError):
    """The ticket was issued in the future, beyond the allowed clock skew."""

    code = "ticket_not_yet_valid"


class TicketWrongNodeError(TicketError):
    """A valid ticket presented by another node than the one it names (replayed)."""

    code = "ticket_wrong_node"


class TicketWrongAudienceError(TicketError):
    """A valid ticket issued for a different relay."""

    code = "ticket_wrong_audience"


class TicketUnnamedError(TicketError):
    """A valid format-1 ticket for any relay, presented to a relay that takes only tickets naming it."""

    code = "ticket_unnamed"


class TicketRevokedError(TicketError):
    """A valid ticket of a node the coordinator has deleted (the relay's revocation list names it)."""

    code = "ticket_revoked"


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a verified ticket says; times are unix seconds."""

    node_id: int
    relays: tuple[str, ...] | None
    """The relay ids it is for; None: any relay (a format-1 ticket without an audience)."""
    issued_at: int
    expires_at: int


# --- keys -------------------------------------------------------------------------------------------


def generate_signing_key() -> str:
    """A new Ed25519 private key as base64 of its raw 32 bytes (store it like any secret: 0600)."""
    return _b64(Ed25519PrivateKey.generate().private_bytes_raw())


def load_private_key(value: str) -> Ed25519PrivateKey:
    """Ed25519 private key from base64 of its raw 32 bytes."""
    return Ed25519PrivateKey.from_private_bytes(_raw_key(value, "private"))


def load_public_key(value: str) -> Ed25519PublicKey:
    """Ed25519 public key from base64 of its raw 32 bytes (what a relay is configured with)."""
    return Ed25519PublicKey.from_public_bytes(_raw_key(value, "public"))


def public_key_of(private_key: str | Ed25519PrivateKey) -> str:
    """Base64 raw public key of a private key."""
    key = load_private_key(private_key) if isinstance(private_key, str) else private_key
    return _b64(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def ticket_fingerprint(ticket: str) -> str:
    """Short stable name for logs; a ticket is a bearer secret and is never logged itself."""
    return hashlib.sha256(ticket.encode("ascii", "replace")).hexdigest()[:12]


# --- issue and verify -------------------------------------------------------------------------------


def issue_ticket(
    private_key: str | Ed25519PrivateKey,
    node_id: int,
    ttl: float,
    now: float,
    *,
    relays: Sequence[str] | None = None,
) -> str:
    """A ticket letting `node_id` use the relays named by id in `relays` from `now` for `ttl` seconds.

    Without `relays`, a format-1 ticket for any relay, as coordinators issued before issue 16 (tests and
    benchmarks use it; relays take it only while `--unnamed-tickets accept`).
    """
    key = load_private_key(private_key) if isinstance(private_key, str) else private_key
    if not 0 <= node_id <= 0xFFFF_FFFF:
        raise ValidationError(f"node id {node_id} does not fit in a ticket (u32)")
    if not 0 < ttl <= MAX_TTL:
        raise ValidationError(f"ticket lifetime {ttl} s must be above 0 and at most {MAX_TTL} s")
    if now < 0:
        raise ValidationError("ticket issue time before 1970")
    if relays is None:
        fmt, count, named = LEGACY_FORMAT, 0, b""
    else:
        fmt, count, named = TICKET_FORMAT, len(relays), _encode_relays(relays)
    issued = math.floor(now)
    payload = _FIXED.pack(fmt, node_id, issued, issued + math.ceil(ttl), count) + named
    return _b64url(payload + key.sign(_DOMAIN + payload))


def check_relay_ids(relays: Sequence[str]) -> None:
    """ValidationError unless one ticket can name all of `relays` (a coordinator checks its announced
    relays at start, so issuing never fails)."""
    _encode_relays(relays)


def _encode_relays(relays: Sequence[str]) -> bytes:
    parts = []
    for relay in relays:
        raw = relay.encode("utf-8")
        if not 1 <= len(raw) <= MAX_AUDIENCE:
            raise ValidationError(f"relay id {relay!r} is {len(raw)} bytes; must be 1 to {MAX_AUDIENCE}")
        parts.append(bytes([len(raw)]) + raw)
    named = b"".join(parts)
    if len(named) > MAX_RELAYS_BYTES:
        raise ValidationError(f"relay ids take {len(named)} bytes in a ticket; at most {MAX_RELAYS_BYTES}")
    return named


def decode_ticket(ticket: str) -> tuple[Ticket, bytes, bytes]:
    """The claimed contents, signed payload and signature, unverified; raises TicketMalformedError."""
    if not 0 < len(ticket) <= 4 * _MAX_RAW // 3 + 4:
        raise TicketMalformedError("relay ticket has an impossible length")
    # The stdlib decoder skips foreign characters; a ticket with any is refused instead.
    if not _ALPHABET.issuperset(ticket):
        raise TicketMalformedError("relay ticket is not base64url")
    try:
        raw = base64.urlsafe_b64decode(ticket + "=" * (-len(ticket) % 4))
    except (binascii.Error, ValueError):
        raise TicketMalformedError("relay ticket is not base64url") from None
    if not _MIN_RAW <= len(raw) <= _MAX_RAW:
        raise TicketMalformedError(f"relay ticket of {len(raw)} bytes has an impossible length")
    fmt, node_id, issued, expires, count = _FIXED.unpack_from(raw)
    body = raw[_FIXED.size : len(raw) - _SIGNATURE]
    if fmt == TICKET_FORMAT:
        relays: tuple[str, ...] | None = _decode_relays(body, count)
    elif fmt == LEGACY_FORMAT:
        if len(body) != count or count > MAX_AUDIENCE:
            raise TicketMalformedError("relay ticket length does not match its audience length")
        audience = _utf8(body, "audience")
        relays = (audience,) if audience else None
    else:
        raise TicketMalformedError(
            f"relay ticket format {fmt} is unknown (this relay reads {LEGACY_FORMAT} and {TICKET_FORMAT})"
        )
    # Re-encoding must give the same string: otherwise two texts (padding, trailing bits) name one ticket.
    if _b64url(raw) != ticket:
        raise TicketMalformedError("relay ticket is not in canonical base64url")
    end = len(raw) - _SIGNATURE
    return Ticket(node_id, relays, issued, expires), raw[:end], raw[end:]


def _decode_relays(body: bytes, count: int) -> tuple[str, ...]:
    if len(body) > MAX_RELAYS_BYTES:
        raise TicketMalformedError("relay ticket names relays in too many bytes")
    relays = []
    pos = 0
    for _ in range(count):
        size = body[pos] if pos < len(body) else 0
        if not 1 <= size <= MAX_AUDIENCE or pos + 1 + size > len(body):
            raise TicketMalformedError("relay ticket relay list does not match its lengths")
        relays.append(_utf8(body[pos + 1 : pos + 1 + size], "relay id"))
        pos += 1 + size
    if pos != len(body):
        raise TicketMalformedError("relay ticket length does not match its relay list")
    return tuple(relays)


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TicketMalformedError(f"relay ticket {what} is not UTF-8") from None


def verify_ticket(
    public_key: str | Ed25519PublicKey,
    ticket: str,
    now: float,
    expected_node_id: int,
    *,
    relay_id: str | None = None,
    accept_unnamed: bool = True,
    leeway: float = DEFAULT_LEEWAY,
) -> Ticket:
    """The ticket's contents if the coordinator signed it for this node and relay and it is valid now.

    A ticket naming relays passes only on the relay whose `relay_id` it names; an unnamed (format-1, any
    relay) ticket passes only with `accept_unnamed`, the upgrade window of docs/relay-protocol.md.
    """
    key = load_public_key(public_key) if isinstance(public_key, str) else public_key
    claims, payload, signature = decode_ticket(ticket)
    try:
        key.verify(signature, _DOMAIN + payload)
    except InvalidSignature:
        raise TicketForgedError("relay ticket signature does not verify with the coordinator's key") from None
    # Checked only after the signature, so an attacker learns nothing from which rule refused it.
    if claims.node_id != expected_node_id:
        raise TicketWrongNodeError(
            f"relay ticket belongs to node {claims.node_id}, presented by node {expected_node_id}"
        )
    if claims.relays is None:
        if not accept_unnamed:
            raise TicketUnnamedError("relay ticket names no relay; this relay takes only tickets naming it")
    elif relay_id not in claims.relays:
        named = ", ".join(repr(r) for r in claims.relays) or "no relay"
        raise TicketWrongAudienceError(
            f"relay ticket is for {named}, not {relay_id or 'this unnamed relay'!r}"
        )
    if claims.issued_at > now + leeway:
        raise TicketNotYetValidError(
            f"relay ticket issued {claims.issued_at - now:.0f} s in the future (clock skew over {leeway:.0f} s)"
        )
    if now >= claims.expires_at:
        raise TicketExpiredError(f"relay ticket expired {now - claims.expires_at:.0f} s ago")
    return claims


# --- helpers ----------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _raw_key(value: str, kind: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"Ed25519 {kind} key is not base64") from None
    if len(raw) != 32:
        raise ValidationError(f"Ed25519 {kind} key must be 32 bytes, got {len(raw)}")
    return raw
