"""wgmesh.netmap: from a registry snapshot to each node's peers, allowed IPs, policy and keys."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from ipaddress import ip_network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmesh import keys
from wgmesh.errors import NotFoundError
from wgmesh.models import DEFAULT_MTU, MAX_MTU, MIN_MTU, NetMap, Network, Node, PeerConfig, Route
from wgmesh.mtu import path_mtu
from wgmesh.netmap import (
    RegistrySnapshot,
    active_routes_by_gateway,
    build_netmap,
    effective_mtu,
    endpoint_candidates,
)
from wgmesh.topology import pair_key
from wgmesh.values import Endpoint

ep = Endpoint.parse

MASTER = b"\x07" * 32
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def node(node_id: int, name: str, overlay_ip: str, **fields: Any) -> Node:
    return Node(
        id=node_id,
        name=name,
        public_key=keys.generate_keypair().public_key,
        overlay_ip=overlay_ip,
        created_at=NOW,
        **fields,
    )


def route(prefix: str, gateway: Node, state: str) -> Route:
    return Route.model_validate(
        {"prefix": prefix, "gateway": gateway.name, "gateway_id": gateway.id, "state": state}
    )


A = node(1, "gw-a", "100.96.0.1", subnets=["10.1.0.0/16", "10.1.2.0/24"])
B = node(2, "gw-b", "100.96.0.2", subnets=["10.2.0.0/16", "10.1.0.0/16"])
C = node(3, "gw-c", "100.96.0.3", subnets=["10.1.5.0/24"])
ROUTES = [
    route("10.1.0.0/16", A, "active"),
    route("10.1.2.0/24", A, "rejected"),
    route("10.2.0.0/16", B, "active"),
    route("10.1.0.0/16", B, "standby"),
    route("10.1.5.0/24", C, "conflict"),
]


def snapshot(**fields: Any) -> RegistrySnapshot:
    base: dict[str, Any] = {
        "version": 7,
        "network": Network(),
        "nodes": [C, A, B],
        "routes": ROUTES,
        "psk_master": MASTER,
    }
    return RegistrySnapshot(**{**base, **fields})


def peer(netmap: NetMap, name: str) -> PeerConfig:
    (found,) = [p for p in netmap.peers if p.name == name]
    return found


def test_every_other_node_is_a_peer_sorted_by_name_and_never_itself() -> None:
    snap = snapshot()
    for me, others in ((A, ["gw-b", "gw-c"]), (B, ["gw-a", "gw-c"]), (C, ["gw-a", "gw-b"])):
        netmap = build_netmap(snap, me.id)
        assert [p.name for p in netmap.peers] == others
        assert netmap.name == me.name
        assert netmap.overlay_ip == me.overlay_ip
        assert netmap.version == 7
        assert netmap.overlay_cidr == ip_network("100.96.0.0/16")


def test_peer_fields_come_from_the_peer() -> None:
    p = peer(build_netmap(snapshot(), A.id), "gw-b")
    assert (p.node_id, p.public_key, p.overlay_ip) == (B.id, B.public_key, B.overlay_ip)


def ips(peer: PeerConfig) -> list[str]:
    return [str(ip) for ip in peer.allowed_ips]


def test_allowed_ips_are_the_overlay_host_prefix_plus_active_routes_only() -> None:
    netmap = build_netmap(snapshot(), C.id)
    assert ips(peer(netmap, "gw-a")) == ["100.96.0.1/32", "10.1.0.0/16"]  # rejected one left out
    assert ips(peer(netmap, "gw-b")) == ["100.96.0.2/32", "10.2.0.0/16"]  # standby left out
    assert ips(peer(build_netmap(snapshot(), A.id), "gw-c")) == ["100.96.0.3/32"]  # conflict left out


def test_ipv6_overlay_gives_a_128_host_prefix() -> None:
    six = [node(1, "gw-a", "fd7a::1"), node(2, "gw-b", "fd7a::2")]
    snap = snapshot(network=Network(overlay_cidr="fd7a::/48"), nodes=six, routes=[])
    assert ips(peer(build_netmap(snap, 1), "gw-b")) == ["fd7a::2/128"]


def test_own_routes_are_reported_with_their_verdicts() -> None:
    assert [(str(r.prefix), r.state) for r in build_netmap(snapshot(), B.id).routes] == [
        ("10.2.0.0/16", "active"),
        ("10.1.0.0/16", "standby"),
    ]


def test_active_routes_by_gateway() -> None:
    assert dict(active_routes_by_gateway(ROUTES)) == {
        A.id: [ip_network("10.1.0.0/16")],
        B.id: [ip_network("10.2.0.0/16")],
    }


def test_psk_is_the_same_from_both_ends_of_a_pair_and_differs_across_pairs() -> None:
    snap = snapshot()
    maps = {n.name: build_netmap(snap, n.id) for n in (A, B, C)}
    psks = {}
    for x, y in itertools.combinations(maps, 2):
        one, other = peer(maps[x], y).psk, peer(maps[y], x).psk
        assert one is not None
        assert one == other
        psks[(x, y)] = one
    assert len(set(psks.values())) == 3


def test_rotating_one_pair_changes_only_that_pairs_psk() -> None:
    before = build_netmap(snapshot(), A.id)
    after = build_netmap(snapshot(psk_generation={pair_key(B.id, A.id): 1}), A.id)
    assert peer(after, "gw-b").psk != peer(before, "gw-b").psk
    assert peer(after, "gw-c").psk == peer(before, "gw-c").psk


def test_no_master_secret_means_no_psk() -> None:
    assert all(p.psk is None for p in build_netmap(snapshot(psk_master=b""), A.id).peers)


def test_netmap_applies_node_network_and_pair_policies() -> None:
    off_b = B.model_copy(update={"p2p": "off"})
    snap = snapshot(nodes=[A, off_b, C], pair_p2p={pair_key(C.id, A.id): "off"})
    netmap = build_netmap(snap, A.id)
    assert netmap.p2p == "auto"
    assert peer(netmap, "gw-b").p2p == "off"  # the peer's own policy
    assert peer(netmap, "gw-c").p2p == "off"  # the pair override, seen from A
    assert peer(build_netmap(snap, C.id), "gw-a").p2p == "off"  # and from C
    assert peer(build_netmap(snap, C.id), "gw-b").p2p == "off"
    assert build_netmap(snap, off_b.id).p2p == "off"
    everyone_off = build_netmap(snapshot(network=Network(p2p="off")), A.id)
    assert everyone_off.p2p == "off"
    assert {p.p2p for p in everyone_off.peers} == {"off"}
    assert {p.p2p for p in build_netmap(snapshot(), A.id).peers} == {"auto"}


def test_endpoint_candidates_reported_first_then_public_then_eth0_without_repeats() -> None:
    n = node(
        9,
        "gw-x",
        "100.96.0.9",
        listen_port=51821,
        endpoints=["198.51.100.7:51821", "10.9.0.5:40000"],
        public_ip="198.51.100.7",
        eth0_ip="10.9.0.5",
    )
    assert endpoint_candidates(n) == [ep("198.51.100.7:51821"), ep("10.9.0.5:40000"), ep("10.9.0.5:51821")]


def test_endpoint_candidates_bracket_ipv6_and_may_be_empty() -> None:
    n = node(9, "gw-x", "100.96.0.9", public_ip="2001:db8::7", eth0_ip="10.9.0.5")
    assert endpoint_candidates(n) == [ep("[2001:db8::7]:51820"), ep("10.9.0.5:51820")]
    assert endpoint_candidates(node(8, "gw-y", "100.96.0.8")) == []


def test_peer_carries_endpoint_candidates_and_addresses() -> None:
    b = B.model_copy(update={"public_ip": "203.0.113.2", "eth0_ip": "10.2.0.1", "endpoints": []})
    p = peer(build_netmap(snapshot(nodes=[A, b, C]), A.id), "gw-b")
    assert p.endpoints == [ep("203.0.113.2:51820"), ep("10.2.0.1:51820")]
    assert (p.public_ip, p.eth0_ip) == ("203.0.113.2", "10.2.0.1")


def test_unknown_node_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        build_netmap(snapshot(), 42)


# --- tunnel MTU -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network_mtu", "ceiling", "max_mtu", "expected"),
    [
        (1420, None, None, 1420),  # nothing known: the network's default
        (1420, 1380, None, 1380),  # the admin's ceiling replaces the default
        (1420, 8900, None, 8900),  # also upwards: a node in a jumbo VPC
        (1420, None, 1360, 1360),  # the underlay carries less than the default
        (1420, None, 8920, 1420),  # ... or more: the default still holds
        (1420, 1380, 1300, 1300),  # the smaller of ceiling and underlay
        (1420, 1300, 1380, 1300),
        (8000, None, 1420, 1420),
        (1420, None, 600, 1280),  # never below IPv6's minimum: the underlay fragments instead
    ],
)
def test_effective_mtu_is_the_ceiling_or_default_capped_by_the_underlay(
    network_mtu: int, ceiling: int | None, max_mtu: int | None, expected: int
) -> None:
    n = A.model_copy(update={"mtu": ceiling, "max_mtu": max_mtu})
    assert effective_mtu(Network(mtu=network_mtu), n) == expected


def test_netmap_mtu_is_the_nodes_own_and_each_peer_carries_its_own() -> None:
    a = A.model_copy(update={"mtu": 1380})
    b = B.model_copy(update={"max_mtu": 1360})
    snap = snapshot(nodes=[a, b, C], network=Network(mtu=1400))
    netmap = build_netmap(snap, A.id)
    assert netmap.mtu == 1380
    assert peer(netmap, "gw-b").mtu == 1360
    assert peer(netmap, "gw-c").mtu == 1400  # nothing set: the network's default
    assert build_netmap(snap, C.id).mtu == 1400


def test_a_registry_without_mtus_gives_the_old_default() -> None:
    netmap = build_netmap(snapshot(), A.id)
    assert netmap.mtu == DEFAULT_MTU == 1420
    assert {p.mtu for p in netmap.peers} == {DEFAULT_MTU}


def test_a_netmap_without_mtus_reads_with_the_default() -> None:
    """A netmap from a coordinator before MTUs (or cached by an agent before the upgrade) still reads."""
    old = build_netmap(snapshot(), A.id).model_dump(mode="json")
    del old["mtu"]
    for p in old["peers"]:
        del p["mtu"]
    again = NetMap.model_validate(old)
    assert again.mtu == DEFAULT_MTU and {p.mtu for p in again.peers} == {DEFAULT_MTU}


admin_mtus = st.none() | st.integers(MIN_MTU, MAX_MTU)
underlay_mtus = st.none() | st.integers(576, 65535)
MESH = [node(i + 1, f"n-{i}", f"100.96.0.{i + 1}") for i in range(6)]  # keys made once, not per example


@settings(max_examples=200)
@given(
    network_mtu=st.integers(MIN_MTU, MAX_MTU),
    limits=st.lists(st.tuples(admin_mtus, underlay_mtus), min_size=2, max_size=6),
)
def test_a_peers_mtu_is_what_that_peer_uses_itself(
    network_mtu: int, limits: list[tuple[int | None, int | None]]
) -> None:
    """Both ends of a pair agree on each end's MTU: peer.mtu in A's netmap is B's own netmap.mtu, so
    clamping MSS to min(own, peer) gives the same number at both ends."""
    nodes = [
        n.model_copy(update={"mtu": ceiling, "max_mtu": underlay})
        for n, (ceiling, underlay) in zip(MESH, limits, strict=False)
    ]
    snap = snapshot(network=Network(mtu=network_mtu), nodes=nodes, routes=[], psk_master=b"")
    maps = {n.name: build_netmap(snap, n.id) for n in nodes}
    for n, (ceiling, underlay) in zip(nodes, limits, strict=True):
        own = maps[n.name].mtu
        assert own <= (ceiling if ceiling is not None else network_mtu)
        assert underlay is None or own <= max(underlay, MIN_MTU)
        assert own >= MIN_MTU
        for p in maps[n.name].peers:
            assert p.mtu == maps[p.name].mtu
    for a, b in itertools.combinations(nodes, 2):
        clamp_at_a = path_mtu(maps[a.name].mtu, peer(maps[a.name], b.name).mtu)
        clamp_at_b = path_mtu(maps[b.name].mtu, peer(maps[b.name], a.name).mtu)
        assert clamp_at_a == clamp_at_b


# --- HA groups (issue 18) ---------------------------------------------------------------------------------

GW2 = node(4, "gw2", "100.96.0.4", site="vpc2", subnets=["10.2.0.0/24"])
GW2B = node(5, "gw2b", "100.96.0.5", site="vpc2", subnets=["10.2.0.0/24"])
GW2C = node(6, "gw2c", "100.96.0.6", site="vpc2", subnets=["10.2.0.0/24", "10.3.0.0/24"])
GW3 = node(7, "gw3", "100.96.0.7", site="vpc3", subnets=["10.3.0.0/24"])
VM1 = node(8, "vm1", "100.96.0.8")


def ha_snapshot(routes: list[Route]) -> RegistrySnapshot:
    return snapshot(nodes=[GW2C, VM1, GW2, GW3, GW2B], routes=routes)


def test_an_active_route_with_standbys_of_its_site_is_an_ha_group_in_every_netmap() -> None:
    # Claim order, as the registry classifies: gw2c stood by before gw2b did.
    snap = ha_snapshot(
        [
            route("10.3.0.0/24", GW3, "active"),
            route("10.2.0.0/24", GW2, "active"),
            route("10.2.0.0/24", GW2C, "standby"),
            route("10.3.0.0/24", GW2C, "conflict"),  # another site's prefix: no group
            route("10.2.0.0/24", GW2B, "standby"),
        ]
    )
    maps = [build_netmap(snap, n.id) for n in snap.nodes]
    groups = maps[0].ha_groups
    assert [(str(g.prefix), g.site, g.members) for g in groups] == [
        ("10.2.0.0/24", "vpc2", [GW2.id, GW2C.id, GW2B.id])
    ]
    assert all(m.ha_groups == groups for m in maps)
    # Allowed IPs as before: the prefix on the primary's peer entry only.
    vm1 = build_netmap(snap, VM1.id)
    assert ips(peer(vm1, "gw2")) == ["100.96.0.4/32", "10.2.0.0/24"]
    assert ips(peer(vm1, "gw2b")) == ["100.96.0.5/32"]
    assert ips(peer(vm1, "gw2c")) == ["100.96.0.6/32"]


@pytest.mark.parametrize(
    "routes",
    [
        [route("10.2.0.0/24", GW2, "active")],  # alone
        [route("10.2.0.0/24", GW2, "active"), route("10.2.0.0/24", GW3, "conflict")],  # another site
        [route("10.2.0.0/24", GW2, "conflict"), route("10.2.0.0/24", GW2B, "standby")],  # no active one
        [route("10.2.0.0/24", GW2, "active"), route("10.2.0.0/24", GW2B, "pending")],  # not approved
    ],
)
def test_no_ha_group_without_an_active_route_and_an_approved_standby_of_its_site(routes: list[Route]) -> None:
    assert build_netmap(ha_snapshot(routes), VM1.id).ha_groups == []


def test_ha_groups_are_sorted_by_prefix_ipv4_first() -> None:
    routes = [
        route("fd00:2::/64", GW2, "active"),
        route("fd00:2::/64", GW2B, "standby"),
        route("10.9.0.0/24", GW2B, "active"),
        route("10.9.0.0/24", GW2, "standby"),
    ]
    groups = build_netmap(ha_snapshot(routes), VM1.id).ha_groups
    assert [(str(g.prefix), g.members) for g in groups] == [
        ("10.9.0.0/24", [GW2B.id, GW2.id]),
        ("fd00:2::/64", [GW2.id, GW2B.id]),
    ]
