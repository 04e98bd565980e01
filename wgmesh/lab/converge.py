"""Pure readings of the lab: `wg show dump` and `ping` output, and whether the mesh has converged."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from wgmesh.errors import ValidationError
from wgmesh.lab.layout import LabPlan
from wgmesh.values import Prefix

_RTT = re.compile(r"= [\d.]+/([\d.]+)/[\d.]+/[\d.]+ ms")


@dataclass(frozen=True)
class WgPeer:
    """One peer line of `wg show IF dump`."""

    public_key: str
    endpoint: str | None
    allowed_ips: tuple[Prefix, ...]
    latest_handshake: int
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True)
class GatewayView:
    """What one gateway's interface holds, or why it could not be read."""

    peers: tuple[WgPeer, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether the mesh has converged; if not, what is still missing (first item is the headline)."""

    converged: bool
    pending: tuple[str, ...]
    # (from site, to site): the peer is configured but has never completed a handshake, so a packet
    # from `from` to `to` would start one.
    nudge: tuple[tuple[int, int], ...] = field(default=())
    peers_seen: int = 0
    handshakes_seen: int = 0
    pairs_expected: int = 0

    @property
    def summary(self) -> str:
        """One line for progress output."""
        return (
            f"peers {self.peers_seen}/{self.pairs_expected}, "
            f"handshakes {self.handshakes_seen}/{self.pairs_expected}"
        )


def parse_wg_dump(text: str) -> tuple[WgPeer, ...]:
    """The peers of `wg show IF dump` (the first line describes the interface and is skipped)."""
    lines = [line for line in text.splitlines() if line.strip()]
    peers = []
    for line in lines[1:]:
        cols = line.split("\t")
        if len(cols) != 8:
            raise ValidationError(f"unexpected wg dump line with {len(cols)} fields", code="bad_wg_dump")
        key, _psk, endpoint, allowed, handshake, rx, tx, _keepalive = cols
        networks = tuple(
            ipaddress.ip_network(a, strict=False) for a in allowed.split(",") if a and a != "(none)"
        )
        peers.append(
            WgPeer(
                public_key=key,
                endpoint=None if endpoint == "(none)" else endpoint,
                allowed_ips=networks,
                latest_handshake=int(handshake),
                rx_bytes=int(rx),
                tx_bytes=int(tx),
            )
        )
    return tuple(peers)


def parse_ping_rtt(text: str) -> float | None:
    """The average round-trip time in ms from `ping`'s summary, or None when nothing came back."""
    match = _RTT.search(text)
    return float(match.group(1)) if match else None


def assess(plan: LabPlan, views: Mapping[int, GatewayView], *, handshakes: bool = True) -> Verdict:
    """Converged when every gateway lists exactly the other sites (subnet in allowed IPs), with handshakes."""
    pending: list[str] = []
    listed: set[tuple[int, int]] = set()
    silent: list[tuple[int, int]] = []
    peers_seen = handshakes_seen = 0
    count = len(plan.sites)
    for site in plan.sites:
        view = views.get(site.index)
        if view is None or view.error is not None:
            reason = view.error if view is not None else "not observed"
            pending.append(f"{site.node}: {reason}")
            continue
        matched: set[str] = set()
        for other in plan.sites:
            if other.index == site.index:
                continue
            # Exact match of the advertised subnet: a wide allowed IP (0.0.0.0/0) must not count as
            # every site at once.
            peer = next((p for p in view.peers if other.lan in p.allowed_ips), None)
            if peer is None:
                pending.append(f"{site.node} has no peer for {other.node} ({other.lan})")
                continue
            matched.add(peer.public_key)
            listed.add((site.index, other.index))
            peers_seen += 1
            if peer.latest_handshake > 0:
                handshakes_seen += 1
            elif handshakes:
                pending.append(f"{site.node} has no handshake with {other.node}")
                silent.append((site.index, other.index))
        extra = [p for p in view.peers if p.public_key not in matched]
        if extra:
            pending.append(f"{site.node} has {len(extra)} unexpected peer(s)")
    return Verdict(
        converged=not pending,
        pending=tuple(pending),
        # Only once both ends list each other: an initiation the far end drops is retried only
        # after WireGuard's 5 s rekey timeout.
        nudge=tuple((a, b) for a, b in silent if (b, a) in listed),
        peers_seen=peers_seen,
        handshakes_seen=handshakes_seen,
        pairs_expected=count * (count - 1),
    )
