"""Bandwidth limits as an HTB tree on the WireGuard interface's egress: the pure desired state and the diff.

Layout (handles are tc's `major:minor`):

    root qdisc 1: htb, default class 1:ffff
      class 1:1      rate = ceil = the node's limit (or UNLIMITED)      ← everything the node sends
        class 1:ffff rate = DEFAULT_RATE, ceil = the node's limit       ← peers without a pair limit
        class 1:N    rate = ceil = the pair's limit                     ← one per limited peer
      u32 filters at prio N (IPv4) and N + 0x8000 (IPv6): destination in the peer's allowed IPs → 1:N

N is the peer's node id + PEER_MINOR_BASE, so a peer keeps its class across netmaps and the filters of one
peer can be replaced (by prio) without touching the others. Shaping happens before encryption, on inner
packets, so a limit counts the VPC traffic itself, not WireGuard's overhead.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from wgmesh.agent import plan
from wgmesh.models import NetMap
from wgmesh.rates import parse_rate

ROOT_HANDLE = 0x10000
TOP_MINOR = 0x1
DEFAULT_MINOR = 0xFFFF
PEER_MINOR_BASE = 0x10
MAX_PEER_MINOR = 0x7FFF
"""Filter priorities are u16 and one priority holds one protocol: IPv4 filters use prio N, IPv6 N + 0x8000."""
IPV6_PRIO_OFFSET = 0x8000
UNLIMITED = 10 * 10**9
"""The top class's rate when only pair limits are set: above anything a WireGuard interface carries."""
DEFAULT_RATE = 1_000_000
"""What unlimited peers are guaranteed under a node limit before borrowing up to it."""


@dataclass(frozen=True, slots=True)
class ShapedPeer:
    """One peer with a pair limit: its class minor, the rate in bit/s and the prefixes routed to it."""

    minor: int
    rate: int
    prefixes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QosSpec:
    """The whole tree: the node's limit (None: only pair limits) and the limited peers by minor."""

    node_rate: int | None
    peers: tuple[ShapedPeer, ...]

    def peer(self, minor: int) -> ShapedPeer | None:
        """The shaped peer with this class minor."""
        return next((p for p in self.peers if p.minor == minor), None)

    @property
    def top_rate(self) -> int:
        """The rate of class 1:1."""
        return self.node_rate if self.node_rate is not None else UNLIMITED


# --- operations -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplaceRoot:
    """Put a fresh HTB root on the interface (whatever qdisc was there goes, with its classes)."""


@dataclass(frozen=True, slots=True)
class RemoveRoot:
    """Take our HTB root away: the interface goes back to its default qdisc."""


@dataclass(frozen=True, slots=True)
class SetClass:
    """Create or change class 1:minor under `parent` with a guaranteed `rate` and a `ceil`."""

    minor: int
    parent: int
    rate: int
    ceil: int


@dataclass(frozen=True, slots=True)
class DeleteClass:
    """Remove class 1:minor (its filters first)."""

    minor: int


@dataclass(frozen=True, slots=True)
class SetFilters:
    """Make the u32 filters at prio `minor` send these destinations to class 1:minor (replacing any)."""

    minor: int
    prefixes: tuple[str, ...]


QosOp = ReplaceRoot | RemoveRoot | SetClass | DeleteClass | SetFilters


def desired_qos(netmap: NetMap) -> QosSpec | None:
    """The tree `netmap` asks for; None when neither the node nor any pair has a limit."""
    peers = tuple(
        ShapedPeer(PEER_MINOR_BASE + p.node_id, parse_rate(p.rate), plan.device_ips(p))
        for p in sorted(netmap.peers, key=lambda p: p.node_id)
        if p.rate is not None and PEER_MINOR_BASE + p.node_id <= MAX_PEER_MINOR
    )
    node_rate = parse_rate(netmap.rate) if netmap.rate is not None else None
    if node_rate is None and not peers:
        return None
    return QosSpec(node_rate, peers)


def _full(spec: QosSpec) -> list[QosOp]:
    top = spec.top_rate
    ops: list[QosOp] = [
        ReplaceRoot(),
        SetClass(TOP_MINOR, 0, top, top),
        SetClass(DEFAULT_MINOR, TOP_MINOR, min(DEFAULT_RATE, top), top),
    ]
    for peer in spec.peers:
        ops += [SetClass(peer.minor, TOP_MINOR, peer.rate, peer.rate), SetFilters(peer.minor, peer.prefixes)]
    return ops


def plan_qos(
    desired: QosSpec | None, applied: QosSpec | None, observed_classes: frozenset[int] | None
) -> list[QosOp]:
    """Operations from what was applied (as the interface still shows it) to `desired`.

    `observed_classes` are the minors under our root (None: our root is not there). An interface that does
    not match what we applied (a restart, or someone ran tc) is rebuilt; otherwise only differences go out.
    """
    if desired is None:
        return [RemoveRoot()] if observed_classes is not None else []
    if applied is None or observed_classes is None or observed_classes != _minors(applied):
        return _full(desired)
    ops: list[QosOp] = []
    if desired.top_rate != applied.top_rate:
        top = desired.top_rate
        ops += [
            SetClass(TOP_MINOR, 0, top, top),
            SetClass(DEFAULT_MINOR, TOP_MINOR, min(DEFAULT_RATE, top), top),
        ]
    for gone in applied.peers:
        if desired.peer(gone.minor) is None:
            ops.append(DeleteClass(gone.minor))
    for new in desired.peers:
        old = applied.peer(new.minor)
        if old is None or old.rate != new.rate:
            ops.append(SetClass(new.minor, TOP_MINOR, new.rate, new.rate))
        if old is None or old.prefixes != new.prefixes:
            ops.append(SetFilters(new.minor, new.prefixes))
    return ops


def _minors(spec: QosSpec) -> frozenset[int]:
    return frozenset({TOP_MINOR, DEFAULT_MINOR, *(p.minor for p in spec.peers)})


def u32_keys(prefix: str) -> tuple[int, list[str]]:
    """The u32 match of a destination prefix: (ethertype, keys as `value/mask+offset`).

    IPv4's destination is at byte 16 of the header, IPv6's at 24 (four 32-bit words); the match is on the
    inner packet, which on a WireGuard interface starts at the IP header.
    """
    net = ipaddress.ip_network(prefix)
    if net.version == 4:
        mask = int(net.netmask)
        return 0x0800, [f"0x{int(net.network_address):08x}/0x{mask:08x}+16"]
    address, mask = int(net.network_address), int(net.netmask)
    keys: list[str] = []
    for word in range(4):
        shift = 96 - 32 * word
        word_mask = (mask >> shift) & 0xFFFFFFFF
        if word_mask:
            keys.append(f"0x{(address >> shift) & 0xFFFFFFFF:08x}/0x{word_mask:08x}+{24 + 4 * word}")
    return 0x86DD, keys or ["0x00000000/0x00000000+24"]


def filter_prio(minor: int, ethertype: int) -> int:
    """The u32 filter priority of a peer class's filters for one protocol."""
    return minor + IPV6_PRIO_OFFSET if ethertype == 0x86DD else minor


def describe(ops: Sequence[QosOp]) -> str:
    """A short summary for logs."""
    return ",".join(type(op).__name__ for op in ops)
