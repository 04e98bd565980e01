"""Registry rows and status reports for the tests of what builds the topology and what renders it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from wgmesh import keys
from wgmesh.models import (
    HaGroup,
    HaStatus,
    Network,
    Node,
    NodeStatus,
    P2PPolicy,
    PeerStatus,
    Route,
    ShadowedRoute,
    StatusReport,
    Topology,
)
from wgmesh.topology import build_topology
from wgmesh.topology_summary import ReportDigest, digest_report
from wgmesh.values import NodeId

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def node(i: int, name: str, **kw: Any) -> Node:
    """Node `i` named `name` at 100.96.0.`i` with a fresh key; `kw` sets any other field."""
    fields: dict[str, Any] = {
        "id": i,
        "name": name,
        "public_key": keys.generate_keypair().public_key,
        "overlay_ip": f"100.96.0.{i}",
        "created_at": NOW,
    }
    fields.update(kw)
    return Node(**fields)


def route(prefix: str, gw: Node, state: str = "active", reason: str = "", other: str | None = None) -> Route:
    """`gw`'s route to `prefix` with the coordinator's verdict."""
    return Route.model_validate(
        {
            "prefix": prefix,
            "gateway": gw.name,
            "gateway_id": gw.id,
            "state": state,
            "reason": reason,
            "conflicting_with": other,
        }
    )


def report(
    of: Node,
    peers: list[PeerStatus],
    shadowed: list[ShadowedRoute] | None = None,
    mtu: int | None = None,
    ha: list[HaStatus] | None = None,
    agent_version: str | None = None,
) -> NodeStatus:
    """`of`'s last status report, received at NOW."""
    return NodeStatus(
        node=of.name,
        reported_at=NOW,
        report=StatusReport(
            peers=peers, shadowed=shadowed or [], mtu=mtu, ha=ha or [], agent_version=agent_version
        ),
    )


def topology(
    nodes: list[Node],
    routes: list[Route] | None = None,
    statuses: list[NodeStatus] | None = None,
    network: Network | None = None,
    pairs: dict[tuple[int, int], P2PPolicy] | None = None,
    groups: list[HaGroup] | None = None,
) -> Topology:
    """What the coordinator answers for these rows and reports at NOW (version 7)."""
    ids = {n.name: n.id for n in nodes}
    return build_topology(
        network or Network(),
        version=7,
        nodes=sorted(nodes, key=lambda n: n.name),
        routes=routes or [],
        pair_overrides=pairs or {},
        statuses={ids[st.node]: st for st in statuses or []},
        now=NOW,
        groups=groups or [],
    )


def digests_of(nodes: list[Node], statuses: list[NodeStatus]) -> dict[NodeId, ReportDigest]:
    """Each report as the coordinator keeps it for the summary (stored as JSON, then digested)."""
    by_name = {n.name: n.id for n in nodes}
    keys = {n.public_key: n.id for n in nodes}
    return {
        by_name[s.node]: digest_report(s.report.model_dump(mode="json"), keys, s.reported_at)
        for s in statuses
    }
