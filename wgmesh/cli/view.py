"""Pure: the coordinator's topology document -> what `wgmesh status` and `wgmesh routes` show.

The models here are the `--json` contract of `wgmesh status` and `wgmesh routes` (docs/cli.md): field
names and meanings do not change without a note there. Every rule (peer views, effective P2P, which node
shadows which route) is wgmesh.topology's, applied by the coordinator: this module only reshapes its
answer. Nothing in this module does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from wgmesh.models import PeerView, PrefixField, Topology, TopologyHaGroup, TopologyNode, TopologyRoute
from wgmesh.values import P2PPolicy, RouteState

RouteViewState = RouteState | Literal["shadowed"]


class View(BaseModel):
    """Base of the view models: exactly the documented fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
    coordinator: str | None = None  # the coordinator URL its agent follows, as it last reported it
    agent_version: str | None = None  # the wgmesh version its agent runs, as it last reported it
    site: str | None = None  # the site it serves (its own name unless its agent names one)
    subnets: list[PrefixField]
    peers: list[PeerView]


class RouteView(View):
    """One advertised subnet with its verdict; `shadowed`: active, but some node does not install it."""

    prefix: PrefixField
    gateway: str
    state: RouteViewState
    reason: str
    conflicts_with: str | None
    decided_by: str | None = None
    alias: PrefixField | None = None  # where the other sites reach it (issue 20)


class StatusView(View):
    """`wgmesh status --json`."""

    nodes: list[NodeView]
    routes: list[RouteView]
    warnings: list[str]
    ha_groups: list[TopologyHaGroup] = []  # as the coordinator joined them (wgmesh.topology)


class RoutesView(View):
    """`wgmesh routes --json`."""

    routes: list[RouteView]
    ha_groups: list[TopologyHaGroup] = []


def node_view(node: TopologyNode) -> NodeView:
    """One node with its peers (`wgmesh status NODE`, and each node of the listing)."""
    return NodeView(
        name=node.name,
        overlay_ip=node.overlay_ip,
        eth0_ip=node.eth0_ip,
        public_ip=node.public_ip,
        online=node.online,
        last_seen=node.last_seen,
        p2p=node.effective_p2p,
        mtu=node.interface_mtu,
        coordinator=node.coordinator,
        agent_version=node.agent_version,
        site=node.site,
        subnets=list(node.subnets),
        peers=list(node.peers),
    )


def route_view(route: TopologyRoute) -> RouteView:
    """A route with the coordinator's verdict, or `shadowed` when some node does not install it."""
    state: RouteViewState = route.state
    reason, conflicts_with = route.reason, route.conflicting_with
    if route.shadowed_by:
        where = "; ".join(
            f"{s.node} (overlaps {f'local {s.local_prefix}' if s.local_prefix else 'a local subnet'} "
            f"on {s.interface})"
            for s in route.shadowed_by
        )
        first = route.shadowed_by[0]
        state, reason = "shadowed", f"active, but not installed on {where}"
        conflicts_with = f"{first.local_prefix}@{first.node}" if first.local_prefix else None
    return RouteView(
        prefix=route.prefix,
        gateway=route.gateway,
        state=state,
        reason=reason,
        conflicts_with=conflicts_with,
        decided_by=route.decided_by,
        alias=route.alias,
    )


def route_views(routes: Sequence[TopologyRoute]) -> list[RouteView]:
    """Every route's view, in the coordinator's order (by prefix)."""
    return [route_view(r) for r in routes]


def status_view(topology: Topology) -> StatusView:
    """`wgmesh status`: every node with its peers, the routes, the coordinator's warnings."""
    return StatusView(
        nodes=[node_view(n) for n in sorted(topology.nodes, key=lambda n: n.name)],
        routes=route_views(topology.routes),
        warnings=list(topology.warnings),
        ha_groups=list(topology.ha_groups),
    )


def peer_counts(node: NodeView) -> tuple[int, int, int]:
    """How many of the node's peers go direct over UDP, over TCP straight to the peer, and through the
    relay."""
    direct = sum(1 for p in node.peers if p.path == "direct")
    tcp = sum(1 for p in node.peers if p.path == "tcp-direct")
    relayed = sum(1 for p in node.peers if p.path == "relay")
    return direct, tcp, relayed
