"""The agent's nftables table as data (agent/ruleset.py) and the MTU arithmetic (wgmesh/mtu.py)."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netmaps import netmap

from wgmesh import keys, mtu
from wgmesh.agent import ruleset
from wgmesh.agent.plan import desired_device
from wgmesh.agent.ruleset import FirewallSpec, MssGroup, collapse
from wgmesh.errors import BackendError
from wgmesh.models import NetMap, PeerConfig


def peer(n: int, allowed: list[str], peer_mtu: int = 1420) -> PeerConfig:
    return PeerConfig(
        node_id=n,
        name=f"gw{n}",
        public_key=keys.generate_keypair().public_key,
        overlay_ip=f"100.96.0.{n}",
        allowed_ips=[f"100.96.0.{n}/32", *allowed],
        mtu=peer_mtu,
    )


def firewall(nm: NetMap, own: int, *, masquerade: bool = False, clamp: bool = True) -> FirewallSpec:
    return ruleset.desired_firewall(
        "wg0", nm, desired_device(nm), own, masquerade=masquerade, mss_clamp=clamp
    )


def test_mtu_arithmetic() -> None:
    assert mtu.underlay_limit(1500, ipv6_underlay=True) == 1420  # WireGuard's usual 1420
    assert mtu.underlay_limit(1460, ipv6_underlay=False) == 1400  # GCP's default VPC MTU
    assert mtu.underlay_limit(9001, ipv6_underlay=False) == 8941  # AWS inside a VPC
    assert mtu.tunnel_mtu(1420, None) == 1420
    assert mtu.tunnel_mtu(1420, 1400) == 1400
    assert mtu.tunnel_mtu(1420, 8941) == 1420  # the ceiling holds on a jumbo underlay
    assert mtu.tunnel_mtu(1420, 1000) == mtu.MIN_MTU  # never below IPv6's minimum
    assert mtu.mss(1400, ipv6=False) == 1360
    assert mtu.mss(1400, ipv6=True) == 1340
    assert mtu.path_mtu(1420, 1420) == 1420  # equal ends: the interface MTU caps the padding
    # Unequal ends: the 1420 end pads a 1400-byte packet to 1408, over a 1400 tunnel's underlay.
    assert mtu.path_mtu(1420, 1400) == mtu.path_mtu(1400, 1420) == 1392
    assert mtu.path_mtu(1420, 1376) == 1376  # already a multiple of 16


def test_peers_are_grouped_by_the_mtu_of_their_path() -> None:
    small = peer(2, ["10.2.0.0/24"], peer_mtu=1380)
    big = peer(3, ["10.3.0.0/24", "2001:db8:3::/64"], peer_mtu=1420)
    jumbo = peer(4, ["10.4.0.0/24"], peer_mtu=8921)
    spec = firewall(netmap(small, big, jumbo), own=1420)
    assert spec.clamps == (
        MssGroup(1376, ("10.2.0.0/24", "100.96.0.2/32")),
        MssGroup(1408, ("10.4.0.0/24", "100.96.0.4/32")),  # the jumbo end pads past our 1420
        MssGroup(1420, ("10.3.0.0/24", "100.96.0.3/32"), ("2001:db8:3::/64",)),
    )
    # A gateway whose own tunnel is the smaller end clamps every peer to itself.
    assert [g.mtu for g in firewall(netmap(small, big, jumbo), own=1296).clamps] == [1296]


def test_script_clamps_both_directions_per_family_and_masquerades() -> None:
    spec = firewall(netmap(peer(2, ["10.2.0.0/24", "2001:db8:2::/64"], peer_mtu=1380)), 1380, masquerade=True)
    script = ruleset.script(spec)
    lines = [line.strip() for line in script.splitlines()]
    assert lines[:3] == [
        "add table inet wgmesh_wg0",
        "delete table inet wgmesh_wg0",
        "table inet wgmesh_wg0 {",
    ]
    assert f'comment "wgmesh {ruleset.digest(spec)}"' in lines
    assert "type filter hook forward priority mangle; policy accept;" in lines
    assert "type nat hook postrouting priority srcnat; policy accept;" in lines
    clamp4 = "tcp flags & (syn | rst) == syn tcp option maxseg size > 1340 tcp option maxseg size set 1340"
    clamp6 = "tcp flags & (syn | rst) == syn tcp option maxseg size > 1320 tcp option maxseg size set 1320"
    assert f'oifname "wg0" ip daddr @mss4_1380 {clamp4}' in lines
    assert f'iifname "wg0" ip saddr @mss4_1380 {clamp4}' in lines
    assert f'oifname "wg0" ip6 daddr @mss6_1380 {clamp6}' in lines
    assert f'iifname "wg0" ip6 saddr @mss6_1380 {clamp6}' in lines
    assert 'iifname "wg0" oifname != "wg0" masquerade' in lines


def test_no_clamp_and_no_masquerade_means_no_table() -> None:
    spec = firewall(netmap(peer(2, ["10.2.0.0/24"])), 1420, clamp=False)
    assert spec.empty
    assert ruleset.script(spec) == "add table inet wgmesh_wg0\ndelete table inet wgmesh_wg0\n"
    assert not firewall(netmap(), 1420).clamps  # no peers, nothing to clamp


def test_shape_recognises_our_table_and_notices_drift() -> None:
    spec = firewall(netmap(peer(2, ["10.2.0.0/24"])), 1420, masquerade=True)
    text = f'table inet wgmesh_wg0 {{\n\tcomment "wgmesh {ruleset.digest(spec)}"\n}}\n'
    rule = {"rule": {"chain": "mss", "expr": []}}
    listing = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"chain": {"name": "mss", "type": "filter", "hook": "forward", "prio": -150}},
            {"chain": {"name": "postrouting", "type": "nat", "hook": "postrouting", "prio": 100}},
            {
                "set": {
                    "name": "mss4_1420",
                    "elem": [{"prefix": {"addr": "10.2.0.0", "len": 24}}, "100.96.0.2"],
                }
            },
            rule,
            rule,
            {"rule": {"chain": "postrouting", "expr": []}},
        ]
    }
    assert ruleset.observed_shape(text, listing) == ruleset.expected_shape(spec)
    flushed = {"nftables": [i for i in listing["nftables"] if "rule" not in i]}
    assert ruleset.observed_shape(text, flushed) != ruleset.expected_shape(spec)
    other = firewall(netmap(peer(2, ["10.2.0.0/24"], peer_mtu=1380)), 1420, masquerade=True)
    assert ruleset.observed_shape(text, listing) != ruleset.expected_shape(other)
    moved = {
        "nftables": [
            {"chain": {**i["chain"], "prio": 0}} if i.get("chain", {}).get("name") == "mss" else i
            for i in listing["nftables"]
        ]
    }
    assert ruleset.observed_shape(text, moved) != ruleset.expected_shape(spec)  # another priority
    ranged = {
        "nftables": [
            {"set": {"name": "mss4_1420", "elem": [{"range": ["10.2.0.0", "10.2.0.255"]}, "100.96.0.2"]}}
            if "set" in i
            else i
            for i in listing["nftables"]
        ]
    }
    assert ruleset.observed_shape(text, ranged) != ruleset.expected_shape(spec)  # a form we never write


@pytest.mark.parametrize("name", ['wg"0', "wg 0", "a" * 16, ""])
def test_names_that_would_need_quoting_are_refused(name: str) -> None:
    with pytest.raises(BackendError):
        ruleset.script(FirewallSpec(name, masquerade=True))


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(8, 32)), min_size=1, max_size=20))
def test_group_elements_never_overlap(prefixes: list[tuple[int, int]]) -> None:
    """nft refuses overlapping intervals in a set: every group's elements are disjoint."""
    allowed = [str(ipaddress.ip_network(f"10.{a}.0.0/{n}", strict=False)) for a, n in prefixes]
    spec = firewall(netmap(peer(2, allowed)), 1420)
    for group in spec.clamps:
        nets = [ipaddress.ip_network(p) for p in group.ipv4]
        assert all(not x.overlaps(y) for i, x in enumerate(nets) for y in nets[i + 1 :])


def test_an_ha_member_masquerades_into_its_own_groups_prefixes_only() -> None:
    group = {"prefix": "10.1.0.0/24", "site": "vpc1", "members": [1, 11]}
    other = {"prefix": "10.2.0.0/24", "site": "vpc2", "members": [2, 12]}
    nm = netmap(peer(2, ["10.2.0.0/24"]), ha_groups=[group, other])
    spec = ruleset.desired_firewall(
        "wg0", nm, desired_device(nm), 1420, masquerade=False, mss_clamp=True, ha_masquerade=True
    )
    assert spec.masquerade_to == MssGroup(0, ("10.1.0.0/24",))
    assert 'iifname "wg0" oifname != "wg0" ip daddr { 10.1.0.0/24 } masquerade' in ruleset.script(spec)
    assert ruleset.expected_shape(spec).rules["postrouting"] == 1
    # With a hook (no HA masquerade), or outside every group, nothing is masqueraded.
    assert firewall(nm, 1420).masquerade_to is None
    outside = netmap(peer(2, ["10.2.0.0/24"]), ha_groups=[other])
    assert (
        ruleset.desired_firewall(
            "wg0",
            outside,
            desired_device(outside),
            1420,
            masquerade=False,
            mss_clamp=True,
            ha_masquerade=True,
        ).masquerade_to
        is None
    )


def test_collapse_is_what_ipaddress_collapses_to() -> None:
    # Merged as integer ranges for speed; the result must be collapse_addresses' own, adjacent prefixes
    # that can join (10.0.0.0/24 and 10.0.1.0/24), covered ones and those that cannot join alike.
    rng = random.Random(19)
    prefixes = [
        f"10.{rng.randrange(3)}.{rng.randrange(256)}.0/{rng.choice([22, 23, 24, 25])}" for _ in range(400)
    ]
    prefixes += [f"100.96.0.{i}/32" for i in range(2, 200)] + ["100.96.1.1/32", "10.0.0.0/24", "10.0.1.0/24"]
    prefixes += [f"2001:db8:{rng.randrange(16):x}::/{rng.choice([48, 56, 64])}" for _ in range(50)]
    nets = [ipaddress.ip_network(p, strict=False) for p in prefixes]
    for version in (4, 6):
        expected = tuple(
            str(n) for n in ipaddress.collapse_addresses(n for n in nets if n.version == version)
        )
        assert collapse(prefixes, version) == expected
    assert collapse(["10.0.1.0/24", "10.0.2.0/24"], 4) == ("10.0.1.0/24", "10.0.2.0/24")
    assert collapse([], 6) == ()


def test_a_vpc_served_under_an_alias_is_translated_both_ways() -> None:
    translations = (
        ruleset.Translation("10.1.0.0/24", "10.201.0.0/24"),
        ruleset.Translation("fd00:1::/64", "fd00:201::/64"),
    )
    spec = FirewallSpec("wg0", translations=translations)
    assert not spec.empty
    lines = [line.strip() for line in ruleset.script(spec).splitlines()]
    assert "type nat hook prerouting priority dstnat; policy accept;" in lines
    assert 'iifname "wg0" ip daddr 10.201.0.0/24 dnat ip prefix to 10.1.0.0/24' in lines
    assert 'oifname "wg0" ip saddr 10.1.0.0/24 snat ip prefix to 10.201.0.0/24' in lines
    assert 'iifname "wg0" ip6 daddr fd00:201::/64 dnat ip6 prefix to fd00:1::/64' in lines
    assert 'oifname "wg0" ip6 saddr fd00:1::/64 snat ip6 prefix to fd00:201::/64' in lines
    shape = ruleset.expected_shape(spec)
    assert shape.rules == {"prerouting": 2, "postrouting": 2}
    assert shape.chains["prerouting"] == ("nat", "prerouting", -100)
    with_masquerade = FirewallSpec("wg0", masquerade=True, translations=translations[:1])
    assert ruleset.expected_shape(with_masquerade).rules == {"prerouting": 1, "postrouting": 2}
    assert ruleset.digest(with_masquerade) != ruleset.digest(FirewallSpec("wg0", masquerade=True))
    reversed_order = FirewallSpec("wg0", translations=translations[::-1])
    assert reversed_order == spec and ruleset.digest(reversed_order) == ruleset.digest(spec)


@pytest.mark.parametrize(
    ("real", "alias"),
    [
        ("10.1.0.0/24", "10.201.0.0/16"),  # another length
        ("10.1.0.0/24", "fd00:1::/120"),  # another family
        ("10.1.0.1/24", "10.201.0.0/24"),  # host bits set
        ("10.1.0.0/24", '10.201.0.0/24" accept'),  # not a prefix at all
        ("10.01.0.0/24", "10.201.0.0/24"),  # not canonical
    ],
)
def test_a_translation_is_two_canonical_prefixes_of_one_family_and_length(real: str, alias: str) -> None:
    with pytest.raises(BackendError):
        ruleset.Translation(real, alias)


def test_the_gateway_translates_its_own_aliased_routes_from_its_netmap() -> None:
    """Issue 20: the netmap's own routes with an alias (routed: active or an HA standby) are the
    translations; an HA group's prefix is the alias, and its masquerade goes to the VPC's own prefix."""

    def own(prefix: str, state: str, alias: str | None) -> dict[str, object]:
        return {"prefix": prefix, "gateway": "gw1", "gateway_id": 1, "state": state, "alias": alias}

    routes = [
        own("10.1.0.0/24", "active", "10.201.0.0/24"),
        own("10.5.0.0/24", "standby", "10.205.0.0/24"),
        own("10.6.0.0/24", "conflict", "10.206.0.0/24"),  # its alias collides: nothing to translate
        own("10.7.0.0/24", "active", None),
    ]
    group = {"prefix": "10.205.0.0/24", "site": "vpc1", "members": [11, 1]}
    nm = netmap(peer(2, ["10.2.0.0/24"]), routes=routes, ha_groups=[group])
    assert ruleset.own_translations(nm) == (
        ruleset.Translation("10.1.0.0/24", "10.201.0.0/24"),
        ruleset.Translation("10.5.0.0/24", "10.205.0.0/24"),
    )
    spec = ruleset.desired_firewall(
        "wg0", nm, desired_device(nm), 1420, masquerade=False, mss_clamp=False, ha_masquerade=True
    )
    assert spec.translations == ruleset.own_translations(nm)
    assert spec.masquerade_to == MssGroup(0, ("10.5.0.0/24",))  # after dnat, the VPC's own address
    assert ruleset.own_translations(netmap(peer(2, []))) == ()
