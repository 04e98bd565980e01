"""Path probes on the wire: small authenticated UDP messages between agents, direct or inside relay frames.

A probe travels the path it measures: straight to the peer's probe port (its WireGuard port + 1) for the
direct path, or as a relay `data` frame for the relay path, where the receiving shim recognises the magic
and hands it to its prober instead of WireGuard (WireGuard messages start with a type byte 1-4 and three
zero bytes, never with `WGMP`). Every message carries a truncated HMAC-SHA256 keyed with the pair's
preshared key, so a probe port answers only the node's peers and cannot be used as a reflector.

Layout (big-endian): magic `WGMP` | version u8 | kind u8 | sender node id u32 | token u64 | body | mac[16];
the body of a ping or pong is one byte, 1 when the sender relays this pair.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum

from wgmesh import keys
from wgmesh.errors import WgmeshError

MAGIC = b"WGMP"
VERSION = 1
MAC_SIZE = 16
PROBE_PORT_OFFSET = 1
"""A node's probe port is its WireGuard listen port plus this: no extra field in the registry or netmap."""

_HEAD = struct.Struct(">4sBBIQ")
_BURST = struct.Struct(">HH")
_REPORT = struct.Struct(">HHII")
MAX_PROBE = 1472
"""Largest probe (fits one UDP datagram on a 1500-byte path without fragments)."""


class Kind(IntEnum):
    """What a probe message is."""

    PING = 1
    PONG = 2
    BURST = 3
    REPORT = 4


@dataclass(frozen=True, slots=True)
class Ping:
    """Asks for a pong with the same token; the sender keeps the send time under the token.

    `relayed` is the sender's own choice for this pair, so each side knows whether WireGuard roaming onto
    its shim follows a peer that chose the relay (leave it) or is a leftover of a switch (undo it). The
    token is a random nonce: the prober takes a pong (and the choice it carries) only as the answer to
    an outstanding ping with that token, from the peer and over the path the ping took; a ping itself is
    answered but believed in nothing, as it may be a recording replayed.
    """

    sender: int
    token: int
    relayed: bool = False


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to a ping, with the answering side's own choice for the pair."""

    sender: int
    token: int
    relayed: bool = False


@dataclass(frozen=True, slots=True)
class Burst:
    """One packet of a load probe: `seq` of `count`, padded to the probe size; the token names the burst."""

    sender: int
    token: int
    seq: int
    count: int
    size: int


@dataclass(frozen=True, slots=True)
class Report:
    """What the receiver of a burst got: packets and bytes, and the microseconds from first to last."""

    sender: int
    token: int
    received: int
    count: int
    received_bytes: int
    span_us: int


Message = Ping | Pong | Burst | Report


class ProbeFormatError(WgmeshError, code="bad_probe"):
    """Not a probe, a probe of another version, or a bad MAC; dropped without an answer."""


def is_probe(datagram: bytes | memoryview) -> bool:
    """Whether a datagram is a probe (as opposed to a WireGuard message)."""
    return bytes(datagram[:4]) == MAGIC


def pair_key(psk: str | None, key_a: str, key_b: str) -> bytes:
    """The MAC key of a pair: its preshared key, else a hash of both public keys (no secret, but stable)."""
    if psk is not None:
        return keys.decode_key(psk)
    low, high = sorted((key_a, key_b))
    return hashlib.sha256(f"wgmesh-probe:{low}:{high}".encode()).digest()


def encode(message: Message, key: bytes) -> bytes:
    """The datagram for `message`, authenticated with the pair key."""
    match message:
        case Ping(sender=sender, token=token, relayed=relayed):
            body = bytes([int(relayed)])
            kind = Kind.PING
        case Pong(sender=sender, token=token, relayed=relayed):
            body = bytes([int(relayed)])
            kind = Kind.PONG
        case Burst(sender=sender, token=token, seq=seq, count=count, size=size):
            kind = Kind.BURST
            head = _HEAD.size + _BURST.size + MAC_SIZE
            if not head <= size <= MAX_PROBE:
                raise ValueError(f"burst packet size {size} outside {head}..{MAX_PROBE}")
            body = _BURST.pack(seq, count) + bytes(size - head)
        case Report(sender=sender, token=token):
            kind = Kind.REPORT
            body = _REPORT.pack(message.received, message.count, message.received_bytes, message.span_us)
    head_bytes = _HEAD.pack(MAGIC, VERSION, kind, sender, token)
    unsigned = head_bytes + body
    return unsigned + _mac(key, unsigned)


def peek_sender(datagram: bytes) -> int:
    """The claimed sender id, read before the MAC is checked to find the pair key."""
    if len(datagram) < _HEAD.size + MAC_SIZE or not is_probe(datagram):
        raise ProbeFormatError("not a probe")
    _, version, _kind, sender, _token = _HEAD.unpack_from(datagram)
    if version != VERSION:
        raise ProbeFormatError(f"probe version {version}")
    return int(sender)


def decode(datagram: bytes, key: bytes) -> Message:
    """The message in `datagram` if its MAC verifies with `key`; ProbeFormatError otherwise."""
    if len(datagram) < _HEAD.size + MAC_SIZE or len(datagram) > MAX_PROBE:
        raise ProbeFormatError("probe of impossible length")
    unsigned, mac = datagram[:-MAC_SIZE], datagram[-MAC_SIZE:]
    if not hmac.compare_digest(mac, _mac(key, unsigned)):
        raise ProbeFormatError("probe MAC does not verify")
    magic, version, kind, sender, token = _HEAD.unpack_from(unsigned)
    if magic != MAGIC or version != VERSION:
        raise ProbeFormatError("not a version 1 probe")
    body = unsigned[_HEAD.size :]
    if kind == Kind.PING and len(body) == 1 and body[0] <= 1:
        return Ping(sender, token, bool(body[0]))
    if kind == Kind.PONG and len(body) == 1 and body[0] <= 1:
        return Pong(sender, token, bool(body[0]))
    if kind == Kind.BURST and len(body) >= _BURST.size:
        seq, count = _BURST.unpack_from(body)
        return Burst(sender, token, seq, count, len(datagram))
    if kind == Kind.REPORT and len(body) == _REPORT.size:
        received, count, nbytes, span = _REPORT.unpack(body)
        return Report(sender, token, received, count, nbytes, span)
    raise ProbeFormatError(f"malformed probe of kind {kind}")


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:MAC_SIZE]
