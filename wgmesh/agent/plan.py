"""Pure planning: the device and routes a netmap asks for, and the operations that get there.

Peers are keyed by public key. An endpoint change is its own operation that never resends allowed
IPs; a change of allowed IPs replaces exactly that peer's list. WireGuard roams endpoints by itself,
so a peer's endpoint is compared with the one the agent last set, not with what the interface shows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from wgmesh.agent.wgstate import (
    KEEPALIVE,
    DeviceSpec,
    PeerSpec,
    PrivateKey,
    canonical,
    network,
    normalize_ips,
    span,
)
from wgmesh.models import NetMap, PeerConfig, ShadowedRoute
from wgmesh.values import Endpoint, IpAddress

EndpointFor = Mapping[str, Endpoint] | Callable[[PeerConfig], Endpoint | None]
"""Endpoint overrides: public key -> endpoint, or a function of the peer (None: no override)."""


# --- device operations ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetPrivateKey:
    """Give the device its private key (shown by fingerprint only)."""

    private_key: PrivateKey


@dataclass(frozen=True, slots=True)
class SetListenPort:
    """Change the UDP port the device listens on."""

    port: int


@dataclass(frozen=True, slots=True)
class SetFwmark:
    """Change the firewall mark on the device's outgoing packets (0: none)."""

    fwmark: int


@dataclass(frozen=True, slots=True)
class AddPeer:
    """Add a peer with its whole configuration."""

    peer: PeerSpec


@dataclass(frozen=True, slots=True)
class RemovePeer:
    """Remove one peer, and with it only its own allowed IPs."""

    public_key: str


@dataclass(frozen=True, slots=True)
class SetEndpoint:
    """Point a peer at another endpoint; its allowed IPs are not touched."""

    public_key: str
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class ReplaceAllowedIps:
    """Replace one peer's allowed IPs with exactly this list."""

    public_key: str
    allowed_ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetPsk:
    """Set (or, with None, clear) a peer's preshared key."""

    public_key: str
    psk: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class SetKeepalive:
    """Set (or, with None, turn off) a peer's persistent keepalive."""

    public_key: str
    keepalive: int | None


DeviceOp = (
    SetPrivateKey
    | SetListenPort
    | SetFwmark
    | AddPeer
    | RemovePeer
    | SetEndpoint
    | ReplaceAllowedIps
    | SetPsk
    | SetKeepalive
)


# --- route operations -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddRoute:
    """Route a remote prefix through the WireGuard interface."""

    prefix: str


@dataclass(frozen=True, slots=True)
class RemoveRoute:
    """Withdraw a route the agent installed."""

    prefix: str


RouteOp = AddRoute | RemoveRoute


# --- desired state --------------------------------------------------------------------------------


def _override(endpoint_for: EndpointFor | None, peer: PeerConfig) -> Endpoint | None:
    if endpoint_for is None:
        return None
    if callable(endpoint_for):
        return endpoint_for(peer)
    return endpoint_for.get(peer.public_key)


def desired_device(
    netmap: NetMap,
    endpoint_for: EndpointFor | None = None,
    *,
    listen_port: int | None = None,
    private_key: PrivateKey | None = None,
) -> DeviceSpec:
    """The device `netmap` asks for.

    A peer's endpoint is its first candidate unless `endpoint_for` overrides it (the relay shim, later).
    An allowed IP claimed by two peers goes to the first only: WireGuard would move it back and forth.
    """
    own_key = private_key.public_key if private_key else None
    claimed: set[str] = set()
    peers: list[PeerSpec] = []
    for peer in netmap.peers:
        if peer.public_key == own_key:
            continue  # WireGuard drops a peer holding the device's own key; asking for it would loop
        endpoint = _override(endpoint_for, peer) or (peer.endpoints[0] if peer.endpoints else None)
        spec = PeerSpec(
            public_key=peer.public_key,
            allowed_ips=device_ips(peer),
            endpoint=endpoint,
            psk=peer.psk,
            keepalive=KEEPALIVE,
        )
        mine = tuple(ip for ip in spec.allowed_ips if ip not in claimed)
        claimed.update(mine)
        # Rebuilt only when something was taken away (rare): a PeerSpec normalizes its IPs again.
        peers.append(spec if len(mine) == len(spec.allowed_ips) else replace(spec, allowed_ips=mine))
    return DeviceSpec.of(
        netmap.listen_port if listen_port is None else listen_port, peers, private_key=private_key
    )


def device_ips(peer: PeerConfig) -> tuple[str, ...]:
    """A peer's allowed IPs as the device holds them: WireGuard's text, which observed specs compare in."""
    return tuple(_text(ip) for ip in peer.allowed_ips)


# Pure and asked again for every peer at every apply (with 1,000 peers, ipaddress's formatting and
# parsing were a good part of an apply); bounded well above what one agent holds.
_text = functools.lru_cache(maxsize=1 << 15)(str)


@functools.lru_cache(maxsize=1 << 14)
def _endpoint_ip(endpoint: Endpoint) -> IpAddress | None:
    return endpoint.ip


def claimed_twice(netmap: NetMap) -> list[tuple[str, str, str]]:
    """Allowed IPs given to more than one peer, as (prefix, peer kept, peer dropped) names."""
    owner: dict[str, str] = {}
    found: list[tuple[str, str, str]] = []
    for peer in netmap.peers:
        for ip in normalize_ips(device_ips(peer)):
            if ip in owner and owner[ip] != peer.name:
                found.append((ip, owner[ip], peer.name))
            owner.setdefault(ip, peer.name)
    return found


def without_prefixes(device: DeviceSpec, prefixes: Iterable[str]) -> DeviceSpec:
    """`device` with `prefixes` taken out of every peer's allowed IPs (refused routes, agent/route_guard.py).

    Out of the allowed IPs too, not only the routes: WireGuard would otherwise still accept the prefix's
    packets from that peer and send replies to its addresses into the tunnel.
    """
    gone = {canonical(p) for p in prefixes}
    if not gone:
        return device
    peers = {
        key: replace(peer, allowed_ips=tuple(ip for ip in peer.allowed_ips if ip not in gone))
        for key, peer in device.peers.items()
    }
    return replace(device, peers=peers)


def direct_endpoints(device: DeviceSpec) -> list[IpAddress]:
    """The underlay addresses WireGuard sends to: every peer endpoint but the relay shim's loopback ones."""
    found: list[IpAddress] = []
    for peer in device.peers.values():
        ip = _endpoint_ip(peer.endpoint) if peer.endpoint is not None else None
        if ip is not None and not ip.is_loopback:
            found.append(ip)
    return found


def desired_routes(netmap: NetMap, device: DeviceSpec) -> dict[str, str | None]:
    """Every prefix routed through the tunnel (each peer's allowed IPs), with the peer that owns it."""
    names = {p.public_key: p.name for p in netmap.peers}
    return {ip: names.get(key) for key, peer in device.peers.items() for ip in peer.allowed_ips}


# --- planning -------------------------------------------------------------------------------------


def _endpoint_changed(
    key: str, want: PeerSpec, have: PeerSpec, applied_endpoints: Mapping[str, Endpoint | None]
) -> bool:
    if want.endpoint is None:
        return False  # WireGuard cannot forget an endpoint; keeping the roamed one is the best we have
    if key in applied_endpoints:
        # Compared with what we last set, so a peer WireGuard roamed elsewhere is left alone.
        return applied_endpoints[key] != want.endpoint
    # Nothing recorded (a restarted agent adopting an interface): line up with the netmap once.
    return have.endpoint != want.endpoint


def plan_device(
    desired: DeviceSpec,
    observed: DeviceSpec,
    applied_endpoints: Mapping[str, Endpoint | None] | None = None,
) -> list[DeviceOp]:
    """Operations that turn `observed` into `desired`; empty when nothing differs.

    `applied_endpoints` holds, per peer, the desired endpoint at the last successful apply.
    """
    applied = applied_endpoints or {}
    ops: list[DeviceOp] = []
    if desired.private_key is not None and desired.private_key != observed.private_key:
        ops.append(SetPrivateKey(desired.private_key))
    if desired.listen_port is not None and desired.listen_port != observed.listen_port:
        ops.append(SetListenPort(desired.listen_port))
    if desired.fwmark is not None and desired.fwmark != (observed.fwmark or 0):
        ops.append(SetFwmark(desired.fwmark))
    # Removals first, so an allowed IP moving from a leaving peer to a new one is not taken away after.
    ops.extend(RemovePeer(key) for key in sorted(observed.peers.keys() - desired.peers.keys()))
    for key in sorted(desired.peers):
        want = desired.peers[key]
        have = observed.peers.get(key)
        if have is None:
            ops.append(AddPeer(want))
            continue
        if want.allowed_ips != have.allowed_ips:
            ops.append(ReplaceAllowedIps(key, want.allowed_ips))
        if _endpoint_changed(key, want, have, applied):
            assert want.endpoint is not None
            ops.append(SetEndpoint(key, want.endpoint))
        if want.psk != have.psk:
            ops.append(SetPsk(key, want.psk))
        if want.keepalive != have.keepalive:
            ops.append(SetKeepalive(key, want.keepalive))
    return ops


def applied_endpoints_after(desired: DeviceSpec) -> dict[str, Endpoint | None]:
    """The record to pass to the next `plan_device` once `desired` has been applied."""
    return {key: peer.endpoint for key, peer in desired.peers.items()}


def apply_ops(device: DeviceSpec, ops: Sequence[DeviceOp]) -> DeviceSpec:
    """What a device holds after `ops`, with WireGuard's semantics (the in-memory backend).

    An allowed IP belongs to one peer: giving it to one takes it from the others. Updates to a peer
    that is not there are ignored, as the backends send them with `update_only`.
    """
    peers = dict(device.peers)
    port, key, fwmark = device.listen_port, device.private_key, device.fwmark

    def take(owner: str, ips: Iterable[str]) -> None:
        wanted = set(ips)
        for other, peer in list(peers.items()):
            if other != owner and wanted & set(peer.allowed_ips):
                kept = tuple(ip for ip in peer.allowed_ips if ip not in wanted)
                peers[other] = replace(peer, allowed_ips=kept)

    for op in ops:
        match op:
            case SetPrivateKey(private_key=new_key):
                key = new_key
                # WireGuard removes a peer that holds the device's own public key.
                peers.pop(new_key.public_key, None)
            case SetListenPort(port=new_port):
                port = new_port
            case SetFwmark(fwmark=mark):
                fwmark = mark
            case AddPeer(peer=peer):
                old = peers.get(peer.public_key)
                endpoint = peer.endpoint or (old.endpoint if old else None)
                take(peer.public_key, peer.allowed_ips)
                peers[peer.public_key] = replace(peer, endpoint=endpoint)
            case RemovePeer(public_key=gone):
                peers.pop(gone, None)
            case SetEndpoint(public_key=k, endpoint=endpoint) if k in peers:
                peers[k] = replace(peers[k], endpoint=endpoint)
            case ReplaceAllowedIps(public_key=k, allowed_ips=ips) if k in peers:
                take(k, ips)
                peers[k] = replace(peers[k], allowed_ips=ips)
            case SetPsk(public_key=k, psk=psk) if k in peers:
                peers[k] = replace(peers[k], psk=psk)
            case SetKeepalive(public_key=k, keepalive=keepalive) if k in peers:
                peers[k] = replace(peers[k], keepalive=keepalive)
            case _:
                pass
    return DeviceSpec(port, peers, key, fwmark)


def plan_routes(
    desired: Mapping[str, str | None] | Iterable[str],
    observed: Iterable[str],
    local_connected: Iterable[tuple[str, str]],
) -> tuple[list[RouteOp], list[ShadowedRoute]]:
    """Route operations, and the remote prefixes not installed because they overlap a local subnet.

    `desired` maps each remote prefix to the gateway name that owns it (or is a plain list);
    `observed` is what the agent installed before; `local_connected` lists (prefix, interface)
    connected on this host outside the tunnel. A shadowed prefix already installed is withdrawn.
    """
    owners = dict(desired) if isinstance(desired, Mapping) else dict.fromkeys(desired)
    local = [(network(p), span(p), ifname) for p, ifname in local_connected]
    # Most specific local subnet first, so the report names the closest clash.
    local.sort(key=lambda item: -item[0].prefixlen)
    wanted: set[str] = set()
    shadowed: list[ShadowedRoute] = []
    for prefix in sorted(owners):
        # Compared as integer spans (cached by text): with 2,000 routes, ipaddress's overlaps() and
        # formatting at every apply were a tenth of the apply's budget.
        version, first, last = span(prefix)
        clash = next(
            ((n, i) for n, (v, lo, hi), i in local if v == version and lo <= last and first <= hi), None
        )
        if clash is None:
            wanted.add(canonical(prefix))
        else:
            shadowed.append(
                ShadowedRoute(
                    prefix=network(prefix), gateway=owners[prefix], interface=clash[1], local_prefix=clash[0]
                )
            )
    have = {canonical(p) for p in observed}
    ops: list[RouteOp] = [RemoveRoute(p) for p in sorted(have - wanted)]
    ops.extend(AddRoute(p) for p in sorted(wanted - have))
    return ops, shadowed
