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


TemplateKey = tuple[object, ...]
"""Everything a node's peer template is made of."""


def template_key(network: Network, node: Node, active: Sequence[Prefix]) -> TemplateKey:
    """What `peer_template` reads of a node: equal keys, equal templates."""
    return (
        node.id,
        node.name,
        node.public_key,
        node.overlay_ip,
        tuple(active),
        tuple(node.endpoints),
        node.eth0_ip,
        node.public_ip,
        node.listen_port,
        node.static,
        node.mtu,
        node.max_mtu,
        network.mtu,
        (node.tcp.port, node.tcp.pin) if node.tcp is not None else None,  # a model is not hashable
    )


def peer_template(network: Network, node: Node, key: TemplateKey) -> PeerConfig:
    """`node` as a peer, before the pair's P2P policy, PSK and rate; `key` is its `template_key`."""
    active = key[4]
    assert isinstance(active, tuple)
    candidates = endpoint_candidates(node)
    return PeerConfig(
        node_id=node.id,
        name=node.name,
        public_key=node.public_key,
        overlay_ip=node.overlay_ip,
        allowed_ips=[ipam.host_prefix(ipaddress.ip_address(node.overlay_ip)), *active],
        endpoints=candidates,
        eth0_ip=node.eth0_ip,
        public_ip=node.public_ip,
        static=node.static,
        mtu=effective_mtu(network, node),
        tcp=node.tcp if candidates else None,  # the listener is reached on the endpoints' hosts
    )


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
    prior_templates: Mapping[TemplateKey, PeerConfig] = field(default_factory=dict, compare=False, repr=False)
    """The previous snapshot's `templates_by_key`: a node whose template inputs did not change keeps its
    template (at 1,000 nodes, building them all again is most of a version's cost)."""

    @cached_property
    def ha_groups(self) -> list[HaGroup]:
        """The network's HA groups (`topology.ha_groups`), worked out once per snapshot: every netmap
        built from it carries the same list."""
        return ha_groups(self.nodes, self.routes)

    @cached_property
    def by_id(self) -> dict[NodeId, Node]:
        """The nodes by id."""
        return {node.id: node for node in self.nodes}

    @cached_property
    def by_name(self) -> list[Node]:
        """The nodes in netmap order (by name)."""
        return sorted(self.nodes, key=lambda n: n.name)

    @cached_property
    def own_routes(self) -> dict[NodeId, list[Route]]:
        """Each gateway's routes as its own netmap states them: a pending or rejected one is in none."""
        out: dict[NodeId, list[Route]] = defaultdict(list)
        for route in self.routes:
            if route_approval.enters_netmap(route.state):
                out[route.gateway_id].append(route)
        return out

    @cached_property
    def templates_by_key(self) -> dict[TemplateKey, PeerConfig]:
        """Each node's peer template by what it is made of: what the next snapshot reuses (`prior_templates`)."""
        active = active_routes_by_gateway(self.routes)
        out: dict[TemplateKey, PeerConfig] = {}
        for node in self.nodes:
            key = template_key(self.network, node, active.get(node.id, []))
            out[key] = self.prior_templates.get(key) or peer_template(self.network, node, key)
        return out

    @cached_property
    def peer_templates(self) -> dict[NodeId, PeerConfig]:
        """Each node as any other node's peer, without what depends on the pair (P2P, PSK, rate): made
        once per node and version at most (an unchanged node's is the prior snapshot's, the same object),
        so a netmap costs a copy per peer, and a change is found by comparing these."""
        return {template.node_id: template for template in self.templates_by_key.values()}

    def node(self, node_id: NodeId) -> Node:
        """The node with this id, or NotFoundError."""
        found = self.by_id.get(node_id)
        if found is None:
            raise NotFoundError(f"node {node_id} does not exist", code="unknown_node")
        return found

    def peer(self, me: Node, other: Node) -> PeerConfig:
        """`other` as `me`'s peer: its template with the pair's P2P policy, PSK and rate."""
        key = pair_key(me.id, other.id)
        psk = (
            keys.derive_pair_psk(self.psk_master, me.id, other.id, self.psk_generation.get(key, 0))
            if self.psk_master
            else None
        )
        p2p = pair_p2p(self.network, me, other, self.pair_p2p.get(key))
        template = self.peer_templates[other.id]
        update: dict[str, object] = {"p2p": p2p, "psk": psk, "rate": self.pair_rate.get(key)}
        if p2p == "off" and template.tcp is not None:
            update["tcp"] = None  # p2p off means the relay: no path straight to the peer, UDP or TCP
        return template.model_copy(update=update)


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
    """Each gateway's active prefixes as the other sites route them (an alias, else the prefix), in
    advertisement order."""
    out: dict[NodeId, list[Prefix]] = defaultdict(list)
    for route in routes:
        if route.state == "active":
            out[route.gateway_id].append(route.published)
    return out


def build_netmap(snapshot: RegistrySnapshot, node_id: NodeId) -> NetMap:
    """The netmap of one node; it lists every other node as a peer."""
    me = snapshot.node(node_id)
    return netmap_with(
        snapshot, me, [snapshot.peer(me, other) for other in snapshot.by_name if other.id != me.id]
    )


def netmap_with(snapshot: RegistrySnapshot, me: Node, peers: list[PeerConfig]) -> NetMap:
    """`me`'s netmap at the snapshot's version with these peers (all of them, or a change's)."""
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
        routes=snapshot.own_routes.get(me.id, []),
        # The same list in every netmap: any agent may send an HA prefix to any member.
        ha_groups=snapshot.ha_groups,
        rate=me.rate,
        mtu=effective_mtu(snapshot.network, me),
        coordinator_next_pin=snapshot.coordinator_next_pin,
        public_key=me.public_key,
        rotate_key=me.rotate_requested_at is not None,
        tcp_direct=True,
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
