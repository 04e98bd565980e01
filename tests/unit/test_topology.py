"""wgmesh.topology: registry rows and status reports -> links, peer views, shadowed routes, warnings, and
the effective P2P rule."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from topologies import NOW, node, report, route, topology

from wgmesh import keys
from wgmesh.models import (
    HaFailover,
    HaGroup,
    HaStatus,
    HealthCounts,
    Network,
    P2PPolicy,
    PeerStatus,
    RouteShadow,
    ShadowedRoute,
    Topology,
)
from wgmesh.topology import (
    HANDSHAKE_FRESH,
    ha_groups,
    node_p2p,
    pair_key,
    pair_p2p,
    shadowed_by,
)

FRESH = NOW - timedelta(seconds=20)
STALE = NOW - HANDSHAKE_FRESH - timedelta(seconds=1)
POLICIES: list[P2PPolicy] = ["auto", "off"]


# --- the effective P2P rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("net", "a", "b", "pair"), list(itertools.product(POLICIES, POLICIES, POLICIES, [None, *POLICIES]))
)
def test_pair_p2p_is_off_when_anyone_says_off(
    net: P2PPolicy, a: P2PPolicy, b: P2PPolicy, pair: P2PPolicy | None
) -> None:
    got = pair_p2p(Network(p2p=net), node(1, "a", p2p=a), node(2, "b", p2p=b), pair)
    assert got == ("off" if "off" in (net, a, b, pair) else "auto")


@pytest.mark.parametrize(("net", "own"), list(itertools.product(POLICIES, POLICIES)))
def test_node_p2p_is_off_when_the_network_or_the_node_says_off(net: P2PPolicy, own: P2PPolicy) -> None:
    assert node_p2p(Network(p2p=net), node(1, "a", p2p=own)) == ("off" if "off" in (net, own) else "auto")


def test_pair_key_is_order_free() -> None:
    assert pair_key(5, 2) == pair_key(2, 5) == (2, 5)


def test_nodes_and_links_carry_the_effective_policies() -> None:
    a, b, c = node(1, "gw-a"), node(2, "gw-b", p2p="off"), node(3, "gw-c")
    topo = topology([a, b, c], pairs={pair_key(c.id, a.id): "off"})
    assert {n.name: n.effective_p2p for n in topo.nodes} == {"gw-a": "auto", "gw-b": "off", "gw-c": "auto"}
    assert {(lk.a, lk.b): lk.p2p for lk in topo.links} == {
        ("gw-a", "gw-b"): "off",  # gw-b's own policy
        ("gw-a", "gw-c"): "off",  # the pair override
        ("gw-b", "gw-c"): "off",
    }
    assert {n.effective_p2p for n in topology([a, c], network=Network(p2p="off")).nodes} == {"off"}
    assert {lk.p2p for lk in topology([a, c]).links} == {"auto"}


# --- links ----------------------------------------------------------------------------------------------


def test_link_path_from_both_ends_reports() -> None:
    a, b, c, d = node(1, "gw-a"), node(2, "gw-b"), node(3, "gw-c"), node(4, "gw-d")
    statuses = [
        report(
            a,
            [
                PeerStatus(
                    public_key=b.public_key, path="direct", last_handshake=FRESH, rtt_ms=4.0, rx_bytes=1
                ),
                PeerStatus(public_key=c.public_key, path="direct", last_handshake=FRESH, rtt_ms=9.0),
            ],
        ),
        report(
            b,
            [
                PeerStatus(
                    public_key=a.public_key, path="direct", last_handshake=STALE, rtt_ms=3.0, tx_bytes=5
                ),
                PeerStatus(public_key=c.public_key, path="direct", last_handshake=STALE),
            ],
        ),
        # gw-c relays to gw-a while gw-a thinks it goes direct: the relay is what carries traffic
        report(c, [PeerStatus(public_key=a.public_key, path="relay", last_handshake=FRESH)]),
    ]
    links = {(lk.a, lk.b): lk for lk in topology([a, b, c, d], statuses=statuses).links}
    assert {k: lk.path for k, lk in links.items()} == {
        ("gw-a", "gw-b"): "direct",  # the freshest handshake of either end counts
        ("gw-a", "gw-c"): "relay",
        ("gw-a", "gw-d"): "unknown",
        ("gw-b", "gw-c"): "down",
        ("gw-b", "gw-d"): "unknown",
        ("gw-c", "gw-d"): "unknown",
    }
    ab = links[("gw-a", "gw-b")]
    assert (ab.rtt_ms, ab.last_handshake, ab.rx_bytes, ab.tx_bytes) == (3.0, FRESH, 1, 5)


def test_an_online_nodes_handshakes_are_judged_at_its_report_and_an_offline_nodes_at_now() -> None:
    """An agent with many peers sends handshake times every few minutes (agent/reporting.py) and says at
    once when one turns stale: while it is alive, its report's time is what they are judged at."""
    a, b = node(1, "gw-a", online=True), node(2, "gw-b")
    made = NOW - timedelta(seconds=150)
    shook = made - timedelta(seconds=60)  # fresh when reported; 210 s old now
    status = report(a, [PeerStatus(public_key=b.public_key, path="direct", last_handshake=shook)])
    old = status.model_copy(update={"reported_at": made})
    (alive,) = topology([a, b], statuses=[old]).links
    assert alive.path == "direct"
    (gone,) = topology([a.model_copy(update={"online": False}), b], statuses=[old]).links
    assert gone.path == "down"


# --- peer views -------------------------------------------------------------------------------------


def test_peer_views_from_the_own_report_else_the_other_ends() -> None:
    a, c, dev = node(1, "gw-a", online=True), node(3, "gw-c", eth0_ip="10.3.0.5"), node(4, "dev", static=True)
    statuses = [
        report(
            a,
            [
                PeerStatus(
                    public_key=c.public_key,
                    path="relay",
                    relay="relay-1",
                    endpoint="198.51.100.3:51820",
                    rtt_ms=12.5,
                    rx_bytes=100,
                    tx_bytes=200,
                    last_handshake=FRESH,
                    reason="p2p off",
                ),
                PeerStatus(
                    public_key=dev.public_key,
                    rx_bytes=7,
                    tx_bytes=8,
                    path="direct",
                    endpoint="192.0.2.9:1",
                    health="down",
                ),
                PeerStatus(public_key=keys.generate_keypair().public_key, rx_bytes=1),  # a deleted node
            ],
            mtu=1380,
        )
    ]
    topo = topology([a, c, dev], statuses=statuses)
    nodes = {n.name: n for n in topo.nodes}
    assert [p.name for p in nodes["gw-a"].peers] == ["dev", "gw-c"]
    seen = {p.name: p for p in nodes["gw-a"].peers}["gw-c"]
    assert (seen.path, seen.relay, seen.endpoint, seen.rtt_ms, seen.rx_bytes, seen.tx_bytes) == (
        "relay",
        "relay-1",
        "198.51.100.3:51820",
        12.5,
        100,
        200,
    )
    assert (seen.last_handshake, seen.reason, seen.eth0_ip, seen.overlay_ip) == (
        FRESH,
        "p2p off",
        "10.3.0.5",
        "100.96.0.3",
    )
    # dev never reports: it sees gw-a through gw-a's report, rx and tx swapped, without gw-a's endpoint
    from_dev = {p.name: p for p in nodes["dev"].peers}
    assert (from_dev["gw-a"].path, from_dev["gw-a"].rx_bytes, from_dev["gw-a"].tx_bytes) == ("direct", 8, 7)
    assert from_dev["gw-a"].endpoint is None
    # health is the viewer's own probes' verdict: gw-a's report says nothing of gw-a's answers to dev
    assert ({p.name: p for p in nodes["gw-a"].peers}["dev"].health, from_dev["gw-a"].health) == ("down", None)
    # nobody reported dev <-> gw-c: only the registry's addresses
    unknown = from_dev["gw-c"]
    assert (unknown.path, unknown.rx_bytes, unknown.rtt_ms, unknown.last_handshake) == (None,) * 4
    assert {n: v.interface_mtu for n, v in nodes.items()} == {"gw-a": 1380, "gw-c": None, "dev": None}


# --- shadowed routes ----------------------------------------------------------------------------------


def test_a_route_is_shadowed_by_the_nodes_that_report_not_installing_it() -> None:
    a, b, c = node(1, "gw-a"), node(2, "gw-b"), node(3, "gw-c")
    routes = [route("10.2.0.0/16", b), route("10.3.0.0/16", c), route("10.9.0.0/16", c)]
    statuses = [
        report(
            a,
            [],
            [
                ShadowedRoute(
                    prefix="10.2.0.0/16", gateway="gw-b", interface="lan", local_prefix="10.2.0.0/24"
                )
            ],
        ),
        # an agent that did not know the gateway: matches the prefix whoever advertises it
        report(c, [], [ShadowedRoute(prefix="10.2.0.0/16", interface="eth1")]),
        # a shadow of gw-b's prefix that names another gateway does not shadow gw-c's route
        report(b, [], [ShadowedRoute(prefix="10.3.0.0/16", gateway="gw-x", interface="eth2")]),
    ]
    got = {str(r.prefix): r.shadowed_by for r in topology([a, b, c], routes, statuses).routes}
    assert got == {
        "10.2.0.0/16": [
            RouteShadow(node="gw-a", interface="lan", local_prefix="10.2.0.0/24"),
            RouteShadow(node="gw-c", interface="eth1"),
        ],
        "10.3.0.0/16": [],
        "10.9.0.0/16": [],
    }


def test_only_an_active_route_can_be_shadowed() -> None:
    a, b = node(1, "gw-a"), node(2, "gw-b")
    shadow = [("gw-a", ShadowedRoute(prefix="10.9.0.0/16", interface="eth1"))]
    assert shadowed_by(route("10.9.0.0/16", a), shadow) == [RouteShadow(node="gw-a", interface="eth1")]
    for state in ("standby", "conflict", "rejected"):
        assert shadowed_by(route("10.9.0.0/16", b, state, "why"), shadow) == []


def test_routes_keep_their_verdict_and_order() -> None:
    a, b = node(1, "gw-a"), node(2, "gw-b")
    routes = [
        route("10.1.0.0/16", a),
        route("10.1.5.0/24", b, "conflict", "10.1.5.0/24 overlaps 10.1.0.0/16@gw-a"),
    ]
    topo = topology([a, b], routes=routes)
    assert [r.model_dump(exclude={"shadowed_by"}) for r in topo.routes] == [r.model_dump() for r in routes]


# --- warnings -------------------------------------------------------------------------------------------


def test_warnings_name_what_needs_a_look() -> None:
    a = node(1, "gw-a", subnets=["10.1.0.0/16"], online=True)
    b = node(2, "gw-b", subnets=["10.1.5.0/24"])  # offline
    dev = node(3, "dev", subnets=["10.7.0.0/24"], static=True)  # static: never "offline"
    c = node(4, "gw-c", online=True)  # no subnets: not a gateway
    routes = [
        route("10.1.0.0/16", a),
        route("10.1.5.0/24", b, "conflict", "10.1.5.0/24 overlaps 10.1.0.0/16@gw-a"),
        route("10.7.0.0/24", dev, "rejected", "10.7.0.0/24 is already advertised"),
    ]
    statuses = [
        report(a, [PeerStatus(public_key=c.public_key, last_handshake=STALE)]),
        report(c, [], [ShadowedRoute(prefix="10.1.0.0/16", gateway="gw-a", interface="lan")]),
    ]
    assert topology([a, b, dev, c], routes, statuses).warnings == [
        "gw-a and gw-c have no recent handshake",
        "route 10.1.5.0/24@gw-b is inactive: 10.1.5.0/24 overlaps 10.1.0.0/16@gw-a",
        "route 10.7.0.0/24@dev is rejected: 10.7.0.0/24 is already advertised",
        "gateway gw-b is offline",
        "gw-c does not install 10.1.0.0/16: it overlaps a local subnet on lan",
    ]


def test_an_agent_older_than_supported_is_a_warning_and_an_unknown_one_is_not() -> None:
    a, b, c, d, e = (node(i, f"gw-{x}", online=True) for i, x in enumerate("abcde", start=1))
    statuses = [
        report(a, [], agent_version="0.2.0"),
        report(b, [], agent_version="0.0.9"),  # older than MIN_AGENT_VERSION (0.1.0)
        report(c, []),  # a report naming no version (stored before 0.2.0): unknown
        report(d, [], agent_version="nightly"),  # not a version: unknown
    ]  # gw-e never reported
    topo = topology([a, b, c, d, e], statuses=statuses)
    assert topo.warnings == [
        "gw-b runs agent 0.0.9, older than 0.1.0, the oldest this coordinator supports: upgrade its agent"
    ]
    assert {n.name: n.agent_version for n in topo.nodes} == {
        "gw-a": "0.2.0",
        "gw-b": "0.0.9",
        "gw-c": None,
        "gw-d": "nightly",
        "gw-e": None,
    }


def test_the_document_keeps_the_network_version_and_nodes() -> None:
    a, b = node(1, "gw-a", tags=["x"]), node(2, "gw-b")
    topo = topology([b, a], network=Network(name="n1"))
    assert (topo.network.name, topo.version) == ("n1", 7)
    assert [
        n.model_dump(exclude={"effective_p2p", "interface_mtu", "coordinator", "agent_version", "peers"})
        for n in topo.nodes
    ] == [
        a.model_dump(),
        b.model_dump(),
    ]
    assert Topology.model_validate_json(topo.model_dump_json()) == topo


# --- HA groups (issue 18) -------------------------------------------------------------------------------

PREFIX = "10.2.0.0/24"


def ha(holder: str | None, code: str, at: str | None = None, **kw: object) -> HaStatus:
    return HaStatus.model_validate({"prefix": PREFIX, "holder": holder, "code": code, "changed_at": at, **kw})


def test_ha_groups_come_from_the_routes_in_claim_order_within_a_site() -> None:
    gw2, gw2b, gw3 = node(2, "gw2", site="vpc2"), node(3, "gw2b", site="vpc2"), node(4, "gw3", site="vpc3")
    routes = [
        route(PREFIX, gw2b, "standby"),  # the registry's claim order, not the names'
        route(PREFIX, gw2, "active"),
        route(PREFIX, gw3, "conflict"),
    ]
    assert ha_groups([gw2, gw2b, gw3], routes) == [HaGroup(prefix=PREFIX, site="vpc2", members=[2, 3])]
    assert ha_groups([gw2, gw2b, gw3], routes[1:]) == []


def test_an_ha_group_shows_each_members_health_carriers_and_the_last_failover() -> None:
    gw2 = node(2, "gw2", site="vpc2")
    gw2b = node(3, "gw2b", site="vpc2", online=True)
    vm1, vm2, vm3 = node(5, "vm1"), node(6, "vm2"), node(7, "vm3")
    statuses = [
        report(
            vm1,
            [
                PeerStatus(public_key=gw2.public_key, health="down"),
                PeerStatus(public_key=gw2b.public_key, health="up"),
            ],
            ha=[ha("gw2b", "holder_down", "2026-12-02T10:00:05Z", moved_from="gw2", reason="gw2 silent 3 s")],
        ),
        report(
            vm2,
            [PeerStatus(public_key=gw2.public_key, health="down"), PeerStatus(public_key=gw2b.public_key)],
            ha=[ha("gw2b", "holder_down", "2026-12-02T10:00:04Z", moved_from="gw2")],
        ),
        report(vm3, [PeerStatus(public_key=gw2.public_key, health="unknown")], ha=[ha("gw2", "primary")]),
        # gw2's own report of itself is no verdict on it
        report(gw2, [PeerStatus(public_key=gw2b.public_key, health="up")], ha=[ha("gw2", "primary")]),
    ]
    topo = topology(
        [gw2, gw2b, vm1, vm2, vm3],
        statuses=statuses,
        groups=[HaGroup(prefix=PREFIX, site="vpc2", members=[2, 3])],
    )
    (group,) = topo.ha_groups
    assert (str(group.prefix), group.site) == (PREFIX, "vpc2")
    primary, standby = group.members
    assert (primary.node, primary.node_id, primary.role, primary.online) == ("gw2", 2, "primary", False)
    assert primary.health == HealthCounts(up=0, down=2, unknown=1)
    assert primary.carried_by == ["gw2", "vm3"]
    assert (standby.node, standby.role, standby.online) == ("gw2b", "standby", True)
    assert standby.health == HealthCounts(up=2, down=0, unknown=0)  # vm2 said nothing: an older agent
    assert standby.carried_by == ["vm1", "vm2"]
    assert group.last_failover == HaFailover.model_validate(
        {
            "at": "2026-12-02T10:00:05Z",
            "reported_by": "vm1",
            "code": "holder_down",
            "holder": "gw2b",
            "moved_from": "gw2",
            "reason": "gw2 silent 3 s",
        }
    )


def test_an_ha_group_nobody_reported_on_has_no_failover_and_unknown_health() -> None:
    gw2, gw2b = node(2, "gw2", site="vpc2"), node(3, "gw2b", site="vpc2")
    topo = topology([gw2, gw2b], groups=[HaGroup(prefix=PREFIX, site="vpc2", members=[2, 3])])
    (group,) = topo.ha_groups
    assert group.last_failover is None
    assert [(m.health, m.carried_by) for m in group.members] == [(HealthCounts(), [])] * 2
    # a member gone since the snapshot: the group is left out rather than half shown
    assert topology([gw2], groups=[HaGroup(prefix=PREFIX, site="vpc2", members=[2, 3])]).ha_groups == []
