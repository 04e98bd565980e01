"""wgmesh.cli.view: the coordinator's topology (as wgmesh.topology builds it from status reports) -> the
`wgmesh status --json` view, without HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from cli_harness import NODE_FIELDS, PEER_FIELDS, ROUTE_FIELDS
from topologies import NOW, node, report, route, topology

from wgmesh import keys
from wgmesh.cli.view import NodeView, StatusView, node_view, peer_counts, route_views, status_view
from wgmesh.models import Network, Node, NodeStatus, PeerStatus, ShadowedRoute, Topology


@pytest.fixture
def mesh() -> tuple[Topology, list[NodeStatus], dict[str, Node]]:
    a = node(
        1,
        "gw-a",
        subnets=["10.1.0.0/16"],
        eth0_ip="10.1.0.5",
        public_ip="203.0.113.1",
        online=True,
        last_seen=NOW,
    )
    b = node(2, "gw-b", subnets=["10.2.0.0/16", "10.1.5.0/24"], p2p="off", eth0_ip="10.2.0.5")
    c = node(3, "gw-c")
    dev = node(4, "dev", static=True)
    handshake = NOW - timedelta(seconds=20)
    statuses = [
        report(
            a,
            [
                PeerStatus(
                    public_key=b.public_key,
                    rx_bytes=100,
                    tx_bytes=200,
                    path="relay",
                    relay="relay-1",
                    rtt_ms=12.5,
                    last_handshake=handshake,
                    reason="p2p off",
                ),
                PeerStatus(
                    public_key=c.public_key,
                    rx_bytes=5,
                    tx_bytes=6,
                    path="direct",
                    endpoint="198.51.100.3:51820",
                    rtt_ms=0.8,
                    last_handshake=handshake,
                ),
                PeerStatus(
                    public_key=dev.public_key, rx_bytes=7, tx_bytes=8, path="direct", endpoint="192.0.2.9:1"
                ),
                PeerStatus(public_key=keys.generate_keypair().public_key, rx_bytes=1),  # a deleted node
            ],
            [
                ShadowedRoute(
                    prefix="10.2.0.0/16", gateway="gw-b", interface="lan", local_prefix="10.2.0.0/24"
                )
            ],
            mtu=1380,
        ),
    ]
    routes = [
        route("10.1.0.0/16", a),
        route("10.1.5.0/24", b, "conflict", "10.1.5.0/24 overlaps 10.1.0.0/16@gw-a", "10.1.0.0/16@gw-a"),
        route("10.2.0.0/16", b),
    ]
    nodes = {n.name: n for n in (a, b, c, dev)}
    return topology(list(nodes.values()), routes, statuses), statuses, nodes


def one(topo: Topology, name: str) -> NodeView:
    """`wgmesh status NAME`'s view of a node of the topology."""
    return node_view(next(n for n in topo.nodes if n.name == name))


def test_status_view_has_exactly_the_documented_fields(mesh: Any) -> None:
    topo, _, _ = mesh
    doc = status_view(topo).model_dump(mode="json")
    assert set(doc) == {"nodes", "routes", "warnings", "ha_groups"}
    assert doc["ha_groups"] == []  # no site has two gateways of one prefix here
    for n in doc["nodes"]:
        assert set(n) == NODE_FIELDS
        for p in n["peers"]:
            assert set(p) == PEER_FIELDS
    for r in doc["routes"]:
        assert set(r) == ROUTE_FIELDS
    assert "gateway gw-b is offline" in doc["warnings"]
    assert doc["warnings"] == topo.warnings
    # Times are ISO 8601 and read back as the same instant.
    a = next(n for n in doc["nodes"] if n["name"] == "gw-a")
    assert datetime.fromisoformat(a["last_seen"]) == NOW
    # And the document validates against the model again (scripts may use it as a schema).
    assert StatusView.model_validate(doc) == status_view(topo)


def test_nodes_are_sorted_and_every_other_node_is_a_peer(mesh: Any) -> None:
    topo, _, _ = mesh
    view = status_view(topo)
    assert [n.name for n in view.nodes] == ["dev", "gw-a", "gw-b", "gw-c"]
    for n in view.nodes:
        assert [p.name for p in n.peers] == sorted(m.name for m in view.nodes if m.name != n.name)


def test_own_report_fills_path_endpoint_relay_rtt_traffic_and_reason(mesh: Any) -> None:
    topo, _, nodes = mesh
    a = one(topo, "gw-a")
    peers = {p.name: p for p in a.peers}
    b = peers["gw-b"]
    assert (b.path, b.relay, b.endpoint, b.rtt_ms, b.rx_bytes, b.tx_bytes) == (
        "relay",
        "relay-1",
        None,
        12.5,
        100,
        200,
    )
    assert b.reason == "p2p off"
    assert b.last_handshake == NOW - timedelta(seconds=20)
    assert (b.eth0_ip, b.public_ip, b.overlay_ip) == ("10.2.0.5", None, nodes["gw-b"].overlay_ip)
    c = peers["gw-c"]
    assert (c.path, c.endpoint, c.relay, c.rtt_ms) == ("direct", "198.51.100.3:51820", None, 0.8)
    assert peer_counts(a) == (2, 0, 1)  # direct, tcp-direct, relay


def test_a_node_without_a_report_is_seen_through_its_peers_reports(mesh: Any) -> None:
    topo, _, _ = mesh
    dev = one(topo, "dev")
    peers = {p.name: p for p in dev.peers}
    # gw-a reported on dev: path and stats from that report, rx/tx swapped, no endpoint (gw-a's
    # endpoint as dev uses it is unknown).
    a = peers["gw-a"]
    assert (a.path, a.rx_bytes, a.tx_bytes, a.endpoint) == ("direct", 8, 7, None)
    # Nobody reported on dev <-> gw-c: everything unknown but the registry's addresses.
    c = peers["gw-c"]
    assert (c.path, c.rx_bytes, c.tx_bytes, c.rtt_ms, c.last_handshake, c.reason) == (None,) * 6
    assert c.overlay_ip == "100.96.0.3"


def test_p2p_is_the_effective_policy_of_network_and_node(mesh: Any) -> None:
    topo, statuses, nodes = mesh
    view = {n.name: n for n in status_view(topo).nodes}
    assert (view["gw-a"].p2p, view["gw-b"].p2p) == ("auto", "off")
    off = topology(list(nodes.values()), [], statuses, Network(p2p="off"))
    assert {n.p2p for n in status_view(off).nodes} == {"off"}


def test_routes_keep_the_verdict_and_mark_shadowed_active_routes(mesh: Any) -> None:
    topo, _, _ = mesh
    routes = {(str(r.prefix), r.gateway): r for r in route_views(topo.routes)}
    assert [r.prefix for r in route_views(topo.routes)] == [r.prefix for r in topo.routes]
    assert routes[("10.1.0.0/16", "gw-a")].state == "active"
    conflict = routes[("10.1.5.0/24", "gw-b")]
    assert (conflict.state, conflict.conflicts_with) == ("conflict", "10.1.0.0/16@gw-a")
    assert "overlaps 10.1.0.0/16@gw-a" in conflict.reason
    shadowed = routes[("10.2.0.0/16", "gw-b")]
    assert shadowed.state == "shadowed"
    assert shadowed.conflicts_with == "10.2.0.0/24@gw-a"
    assert "gw-a" in shadowed.reason and "10.2.0.0/24" in shadowed.reason and "lan" in shadowed.reason


def test_a_shadow_without_gateway_matches_by_prefix_and_inactive_routes_are_not_shadowed() -> None:
    a, b = node(1, "gw-a"), node(2, "gw-b")
    routes = [route("10.9.0.0/16", a), route("10.9.0.0/16", b, "standby", "standby for 10.9.0.0/16@gw-a")]
    st = [report(b, [], [ShadowedRoute(prefix="10.9.0.0/16", interface="eth1")])]
    views = route_views(topology([a, b], routes, st).routes)
    assert [v.state for v in views] == ["shadowed", "standby"]
    assert views[0].conflicts_with is None
    assert "a local subnet on eth1" in views[0].reason


def test_mtu_is_what_the_nodes_own_report_says(mesh: Any) -> None:
    topo, _, _ = mesh
    view = status_view(topo)
    assert {n.name: n.mtu for n in view.nodes} == {"dev": None, "gw-a": 1380, "gw-b": None, "gw-c": None}
    assert one(topo, "gw-a").mtu == 1380
