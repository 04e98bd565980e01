"""Pure readings of the lab: `wg show dump` and `ping` output, and whether the mesh has converged."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from wgmesh.errors import ValidationError
from wgmesh.lab.layout import Gateway, LabPlan
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
    # The interface's own public key (the dump's first line): how the other gateways' views find its peer.
    public_key: str | None = None


@dataclass(frozen=True)
class Nudge:
    """One ping that makes gateway `source` handshake with gateway `target`: to `address`, the target's LAN
    address (another site's, reached through the tunnel) or its overlay address (the same site's)."""

    source: str
    target: str
    address: str


@dataclass(frozen=True)
class Verdict:
    """Whether the mesh has converged; if not, what is still missing (first item is the headline)."""

    converged: bool
    pending: tuple[str, ...]
    # The peer is configured but has never completed a handshake, so a packet from `source` to `target`
    # would start one.
    nudge: tuple[Nudge, ...] = field(default=())
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


def parse_wg_public_key(text: str) -> str | None:
    """The interface's own public key from `wg show IF dump` (the second field of its first line; the first
    is the private key, which is never kept)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    cols = first.split("\t")
    return cols[1] if len(cols) == 4 and cols[1] != "(none)" else None


def parse_default_via(text: str) -> ipaddress.IPv4Address | None:
    """The next hop of the default route in `ip -4 route show default` output (None: no default route, or
    one with no next hop)."""
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["default"] and "via" in words[:-1]:
            try:
                return ipaddress.IPv4Address(words[words.index("via") + 1])
            except ValueError:
                return None
    return None


def parse_ping_rtt(text: str) -> float | None:
    """The average round-trip time in ms from `ping`'s summary, or None when nothing came back."""
    match = _RTT.search(text)
    return float(match.group(1)) if match else None


def assess(
    plan: LabPlan, views: Mapping[int, GatewayView] | Mapping[str, GatewayView], *, handshakes: bool = True
) -> Verdict:
    """Converged when every gateway lists every other gateway as a peer (an HA site's second one too), routes
    every other site's LAN (the exact prefix) to one of that site's gateways, and has a handshake with each.

    `views` are by gateway node (`gw2b`), or by site for the sites' own gateways. A gateway is found among a
    view's peers by its public key (from its own view); without one, a plain site's gateway is the peer
    that carries its LAN.

    A site whose LAN overlaps another's (`--lan`, `plan.shared_lans`) is a peer like any other, but nothing
    is expected of its LAN: the mesh routes one real prefix to one site at most (the coordinator holds
    the others in conflict until an alias publishes them elsewhere), and its LAN address may be the
    gateway's own, so its gateway is found by key only and nudged at its overlay address.
    """
    by_node = {plan.site(k).node if isinstance(k, int) else k: v for k, v in views.items()}
    keys = {node: v.public_key for node, v in by_node.items() if v.public_key is not None}
    pending: list[str] = []
    listed: set[tuple[str, str]] = set()
    silent: list[Nudge] = []
    peers_seen = handshakes_seen = 0
    gateways = plan.gateways
    for gateway in gateways:
        view = by_node.get(gateway.node)
        if view is None or view.error is not None:
            reason = view.error if view is not None else "not observed"
            pending.append(f"{gateway.node}: {reason}")
            continue
        matched: set[str] = set()
        absent: set[str] = set()
        unknown = 0
        for other in gateways:
            if other.node == gateway.node:
                continue
            peer = _peer_of(plan, view, other, keys.get(other.node))
            site = plan.site(other.site)
            if peer is None:
                unread = by_node.get(other.node)
                if other.second and keys.get(other.node) is None and (unread is None or unread.error):
                    unknown += 1  # its own view is pending already, and only its key tells its peer apart
                    continue
                shown = f" ({site.lan})" if not site.ha else ""
                pending.append(f"{gateway.node} has no peer for {other.node}{shown}")
                absent.add(other.node)
                continue
            matched.add(peer.public_key)
            listed.add((gateway.node, other.node))
            peers_seen += 1
            if peer.latest_handshake > 0:
                handshakes_seen += 1
            elif handshakes:
                pending.append(f"{gateway.node} has no handshake with {other.node}")
                address = _nudge_address(plan, gateway, other, peer)
                if address is not None:
                    silent.append(Nudge(gateway.node, other.node, address))
        pending += _unrouted(plan, gateway, view, absent)
        # A peer that may be a gateway whose key is unknown is not counted as unexpected.
        extra = len([p for p in view.peers if p.public_key not in matched]) - unknown
        if extra > 0:
            pending.append(f"{gateway.node} has {extra} unexpected peer(s)")
    count = len(gateways)
    return Verdict(
        converged=not pending,
        pending=tuple(pending),
        # Only once both ends list each other: an initiation the far end drops is retried only
        # after WireGuard's 5 s rekey timeout.
        nudge=tuple(n for n in silent if (n.target, n.source) in listed),
        peers_seen=peers_seen,
        handshakes_seen=handshakes_seen,
        pairs_expected=count * (count - 1),
    )


def _peer_of(plan: LabPlan, view: GatewayView, other: Gateway, key: str | None) -> WgPeer | None:
    if key is not None:
        return next((p for p in view.peers if p.public_key == key), None)
    site = plan.site(other.site)
    if site.ha or site.index in plan.shared_lans:
        # Its LAN tells nothing apart: another gateway advertises it too, or another site's holds it.
        return None
    # Exact match of the advertised subnet: a wide allowed IP (0.0.0.0/0) must not count as every site at once.
    return next((p for p in view.peers if site.lan in p.allowed_ips), None)


def _unrouted(plan: LabPlan, gateway: Gateway, view: GatewayView, absent: set[str]) -> list[str]:
    """Every other site's LAN must go to exactly one peer; a site none of whose gateways is a peer yet is
    reported as such already."""
    missing = []
    for site in plan.sites:
        if site.index == gateway.site or all(g.node in absent for g in site.gateways):
            continue
        if site.index in plan.shared_lans:
            # At most one of the sites sharing a prefix is routed at it (the oldest claim), and a gateway
            # whose own LAN it overlaps routes it to nobody: no single answer to expect (see assess).
            continue
        carriers = [p for p in view.peers if site.lan in p.allowed_ips]
        if not carriers:
            missing.append(f"{gateway.node} routes {site.lan} to no gateway of {site.name}")
        elif len(carriers) > 1:
            missing.append(f"{gateway.node} routes {site.lan} to {len(carriers)} peers")
    return missing


def _nudge_address(plan: LabPlan, gateway: Gateway, other: Gateway, peer: WgPeer) -> str | None:
    if other.site != gateway.site and other.site not in plan.shared_lans:
        # Through the tunnel to whichever gateway carries that LAN; the answer of a standby (reached over
        # the LAN) comes back through its own tunnel, which is the handshake wanted.
        return str(other.lan_ip)
    # The same site: the LAN connects them directly, so only the overlay address crosses the tunnel. A site
    # whose LAN another shares: its LAN address may be this gateway's own, or routed to the other site.
    host = next((n for n in peer.allowed_ips if n.prefixlen == n.max_prefixlen), None)
    return None if host is None else str(host.network_address)
