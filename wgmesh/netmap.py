"""Pure: from a registry snapshot, the netmap of each node (its peers, allowed IPs and routes)."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from wgmesh import ipam, keys, route_approval
from wgmesh import mtu as mtus
from wgmesh.errors import NotFoundError
from wgmesh.models import (
    HaGroup,
    NetMap,
    Network,
    Node,
    PeerConfig,
    Route,
    WgQuickConfig,
    WgQuickInterface,
    WgQuickPeer,
)
from wgmesh.topology import ha_groups, node_p2p, pair_key, pair_p2p
from wgmesh.values import Endpoint, NodeId, P2PPolicy, Prefix

# A static peer often sits behind NAT and has no agent to re-open the path: keep it warm.
STATIC_KEEPALIVE = 25


@dataclass(frozen=True)
class RegistrySnapshot:
    """What the netmap builder reads: one consistent view of the registry."""

    version: int
    network: Network
    nodes: Sequence[Node]
    routes: Sequence[Route]
    pair_p2p: Mapping[tuple[int, int], P2PPolicy] = field(default_factory=dict)
    pair_rate: Mapping[tuple[int, int], str] = field(default_factory=dict)
    psk_generation: Mapping[tuple[int, int], int] = field(default_factory=dict)
    psk_master: bytes = b""
    coordinator_next_pin: str | None = None

    @cached_property
    def ha_groups(self) -> list[HaGroup]:
        """The network's HA groups (`topology.ha_groups`), worked out once per snapshot: every netmap
        built from it carries the same list."""
        return ha_groups(self.nodes, self.routes)

    def node(self, node_id: NodeId) -> Node:
        """The node with this id, or NotFoundError."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise NotFoundError(f"node {node_id} does not exist", code="unknown_node")


def effective_mtu(network: Network, node: Node) -> int:
    """The node's tunnel MTU: its ceiling (else the network's default), lowered to what its underlay carries.

    Both ends of a pair compute the same number for a node, so each can clamp TCP MSS to the smaller of
    its own and its peer's: a segment either end sends then fits the narrower tunnel.
    """
    return mtus.tunnel_mtu(ceiling_mtu(network, node), node.max_mtu)


def ceiling_mtu(network: Network, node: Node) -> int:
    """The node's MTU ceiling: its own, else the network's default."""
    return node.mtu if node.mtu is not None else network.mtu


def endpoint_candidates(node: Node) -> list[Endpoint]:
    """Where a peer may reach `node` over UDP: reported endpoints first, then eth0 and public IP."""
    seen: list[Endpoint] = list(node.endpoints)
    for address in (node.public_ip, node.eth0_ip):
        if address is None:
            continue
        candidate = Endpoint(address, node.listen_port)
        if candidate not in seen:
            seen.append(candidate)
    return seen


def active_routes_by_gateway(routes: Sequence[Route]) -> dict[NodeId, list[Prefix]]:
    """Each gateway's active prefixes, in advertisement order."""
    out: dict[NodeId, list[Prefix]] = defaultdict(list)
    for route in routes:
        if route.state == "active":
            out[route.gateway_id].append(route.prefix)
    return out


def build_netmap(snapshot: RegistrySnapshot, node_id: NodeId) -> NetMap:
    """The netmap of one node; it lists every other node as a peer."""
    me = snapshot.node(node_id)
    active = active_routes_by_gateway(snapshot.routes)
    peers: list[PeerConfig] = []
    for other in sorted(snapshot.nodes, key=lambda n: n.name):
        if other.id == me.id:
            continue
        key = pair_key(me.id, other.id)
        overlay = ipam.host_prefix(ipaddress.ip_address(other.overlay_ip))
        psk = (
            keys.derive_pair_psk(snapshot.psk_master, me.id, other.id, snapshot.psk_generation.get(key, 0))
            if snapshot.psk_master
            else None
        )
        peers.append(
            PeerConfig(
                node_id=other.id,
                name=other.name,
                public_key=other.public_key,
                overlay_ip=other.overlay_ip,
                allowed_ips=[overlay, *active.get(other.id, [])],
                endpoints=endpoint_candidates(other),
                p2p=pair_p2p(snapshot.network, me, other, snapshot.pair_p2p.get(key)),
                psk=psk,
                eth0_ip=other.eth0_ip,
                public_ip=other.public_ip,
                rate=snapshot.pair_rate.get(key),
                static=other.static,
                mtu=effective_mtu(snapshot.network, other),
            )
        )
    return NetMap(
        version=snapshot.version,
        node_id=me.id,
        name=me.name,
        overlay_ip=me.overlay_ip,
        overlay_cidr=snapshot.network.overlay_cidr,
        listen_port=me.listen_port,
        p2p=node_p2p(snapshot.network, me),
        peers=peers,
        # Its own routes as the gateway should know them; a pending or rejected one is in no netmap.
        routes=[
            r for r in snapshot.routes if r.gateway_id == me.id and route_approval.enters_netmap(r.state)
        ],
        # The same list in every netmap: any agent may send an HA prefix to any member.
        ha_groups=snapshot.ha_groups,
        rate=me.rate,
        mtu=effective_mtu(snapshot.network, me),
        coordinator_next_pin=snapshot.coordinator_next_pin,
        public_key=me.public_key,
        rotate_key=me.rotate_requested_at is not None,
    )


def wg_quick_config(netmap: NetMap, private_key: str) -> WgQuickConfig:
    """A static peer's wg-quick configuration: its netmap with its private key, one endpoint per peer.

    A static peer has no agent, so it cannot use the relay or try several endpoints: each peer gets its
    best endpoint candidate (none if it has none) and a keepalive when it has one.
    """
    address = ipam.host_prefix(ipaddress.ip_address(netmap.overlay_ip))
    return WgQuickConfig(
        node=netmap.name,
        interface=WgQuickInterface(
            private_key=private_key, address=[address], listen_port=netmap.listen_port, mtu=netmap.mtu
        ),
        peers=[
            WgQuickPeer(
                name=peer.name,
                public_key=peer.public_key,
                preshared_key=peer.psk,
                allowed_ips=peer.allowed_ips,
                endpoint=peer.endpoints[0] if peer.endpoints else None,
                persistent_keepalive=STATIC_KEEPALIVE if peer.endpoints else None,
            )
            for peer in netmap.peers
        ],
    )
