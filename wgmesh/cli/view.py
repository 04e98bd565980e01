"""Pure: the coordinator's documents (topology and status reports) -> what `wgmesh status` shows.

The models here are the `--json` contract of `wgmesh status` and `wgmesh routes` (docs/cli.md): field
names and meanings do not change without a note there. Nothing in this module does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from wgmesh.models import Node, NodeStatus, PeerStatus, Route, Topology
from wgmesh.values import P2PPolicy, PathKind, RouteState

RouteViewState = RouteState | Literal["shadowed"]


class View(BaseModel):
    """Base of the view models: exactly the documented fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PeerView(View):
    """One peer of a node, as that node sees it (null where nobody reported it)."""

    name: str
    overlay_ip: str
    eth0_ip: str | None
    public_ip: str | None
    path: PathKind | None
    endpoint: str | None
    relay: str | None
    rtt_ms: float | None
    rx_bytes: int | None
    tx_bytes: int | None
    last_handshake: datetime | None
    reason: str | None


class NodeView(View):
    """One node with its peers."""

    name: str
    overlay_ip: str
    eth0_ip: str | None
    public_ip: str | None
    online: bool
    last_seen: datetime | None
    p2p: P2PPolicy
    mtu: int | None  # the MTU of the node's WireGuard interface, as its agent last reported it
    subnets: list[str]
    peers: list[PeerView]


class RouteView(View):
    """One advertised subnet with its verdict; `shadowed`: active, but some node does not install it."""

    prefix: str
    gateway: str
    state: RouteViewState
    reason: str
    conflicts_with: str | None


class StatusView(View):
    """`wgmesh status --json`."""

    nodes: list[NodeView]
    routes: list[RouteView]
    warnings: list[str]


class RoutesView(View):
    """`wgmesh routes --json`."""

    routes: list[RouteView]


def effective_node_p2p(topology: Topology, node: Node) -> P2PPolicy:
    """`off` when the network or the node says so."""
    return "off" if "off" in (topology.network.p2p, node.p2p) else "auto"


def _reports(statuses: Iterable[NodeStatus]) -> dict[str, dict[str, PeerStatus]]:
    """Per reporting node, its peer entries keyed by public key."""
    return {st.node: {p.public_key: p for p in st.report.peers} for st in statuses}


def _peer_view(node: Node, peer: Node, reports: dict[str, dict[str, PeerStatus]]) -> PeerView:
    own = reports.get(node.name, {}).get(peer.public_key)
    # A node that does not report (a static peer) is seen through the other end's report of it:
    # the other end's rx is this node's tx; the endpoint it used is this node's, so it is left out.
    theirs = None if own is not None else reports.get(peer.name, {}).get(node.public_key)
    seen = own or theirs
    return PeerView(
        name=peer.name,
        overlay_ip=peer.overlay_ip,
        eth0_ip=peer.eth0_ip,
        public_ip=peer.public_ip,
        path=seen.path if seen else None,
        endpoint=own.endpoint if own else None,
        relay=seen.relay if seen else None,
        rtt_ms=seen.rtt_ms if seen else None,
        rx_bytes=own.rx_bytes if own else (theirs.tx_bytes if theirs else None),
        tx_bytes=own.tx_bytes if own else (theirs.rx_bytes if theirs else None),
        last_handshake=seen.last_handshake if seen else None,
        reason=seen.reason if seen else None,
    )


def node_view(topology: Topology, statuses: Sequence[NodeStatus], name: str) -> NodeView:
    """One node with its peers; the node must be in the topology (KeyError otherwise)."""
    nodes = {n.name: n for n in topology.nodes}
    return _node_view(topology, nodes[name], _reports(statuses), _mtus(statuses))


def _mtus(statuses: Iterable[NodeStatus]) -> dict[str, int]:
    """Per reporting node, the interface MTU it reported (if it did)."""
    return {st.node: st.report.mtu for st in statuses if st.report.mtu is not None}


def _node_view(
    topology: Topology, node: Node, reports: dict[str, dict[str, PeerStatus]], mtus: dict[str, int]
) -> NodeView:
    peers = [
        _peer_view(node, other, reports)
        for other in sorted(topology.nodes, key=lambda n: n.name)
        if other.id != node.id
    ]
    return NodeView(
        name=node.name,
        overlay_ip=node.overlay_ip,
        eth0_ip=node.eth0_ip,
        public_ip=node.public_ip,
        online=node.online,
        last_seen=node.last_seen,
        p2p=effective_node_p2p(topology, node),
        mtu=mtus.get(node.name),
        subnets=list(node.subnets),
        peers=peers,
    )


def route_views(routes: Sequence[Route], statuses: Sequence[NodeStatus]) -> list[RouteView]:
    """The coordinator's verdicts, with active routes that some node reports not installing marked
    `shadowed`; sorted by prefix as the coordinator sorts them."""
    shadows: dict[tuple[str, str | None], list[tuple[str, str, str | None]]] = {}
    for st in sorted(statuses, key=lambda s: s.node):
        for sh in st.report.shadowed:
            shadows.setdefault((sh.prefix, sh.gateway), []).append((st.node, sh.interface, sh.local_prefix))
    out: list[RouteView] = []
    for route in routes:
        found = (
            []
            if route.state != "active"
            else [
                *shadows.get((route.prefix, route.gateway), []),
                *shadows.get((route.prefix, None), []),
            ]
        )
        if found:
            where = "; ".join(
                f"{node} (overlaps {'local ' + local if local else 'a local subnet'} on {ifname})"
                for node, ifname, local in found
            )
            node, _, local = found[0]
            out.append(
                RouteView(
                    prefix=route.prefix,
                    gateway=route.gateway,
                    state="shadowed",
                    reason=f"active, but not installed on {where}",
                    conflicts_with=f"{local}@{node}" if local else None,
                )
            )
        else:
            out.append(
                RouteView(
                    prefix=route.prefix,
                    gateway=route.gateway,
                    state=route.state,
                    reason=route.reason,
                    conflicts_with=route.conflicting_with,
                )
            )
    return out


def status_view(topology: Topology, statuses: Sequence[NodeStatus]) -> StatusView:
    """`wgmesh status`: every node with its peers, the routes, the coordinator's warnings."""
    reports, mtus = _reports(statuses), _mtus(statuses)
    return StatusView(
        nodes=[_node_view(topology, n, reports, mtus) for n in sorted(topology.nodes, key=lambda n: n.name)],
        routes=route_views(topology.routes, statuses),
        warnings=list(topology.warnings),
    )


def peer_counts(node: NodeView) -> tuple[int, int]:
    """How many of the node's peers go direct, and how many through the relay."""
    direct = sum(1 for p in node.peers if p.path == "direct")
    relayed = sum(1 for p in node.peers if p.path == "relay")
    return direct, relayed
