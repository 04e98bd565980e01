"""The lab plan of an HA site (issue 18): a second gateway `gwIb` on site I's LAN, with names and addresses
that never collide, a bridge on the VPC host, and the agents' HA flags."""

from __future__ import annotations

import shlex
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmesh.errors import ValidationError
from wgmesh.lab.layout import (
    MAX_HA_SITE,
    MAX_SITES,
    Service,
    agent_args,
    build_commands,
    owns,
    plan_lab,
    resolve_node,
    resolve_service,
    site_commands,
)

lab_names = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)
IFNAMSIZ = 15


def test_a_second_gateway_has_its_own_names_and_addresses() -> None:
    plan = plan_lab("wgl", 3, ha_sites=[2])
    site = plan.site(2)
    assert site.ha and not plan.site(1).ha and plan.ha_sites == (2,)
    second = site.second
    assert second is not None and second.second and not site.gateway.second
    assert (second.node, second.site, second.netns) == ("gw2b", 2, "wgl-gw2b")
    assert (second.uplink, second.wg_interface) == ("wgl-g2b", "wgl-wg2b")
    assert second.underlay_ip == IPv4Address("198.18.0.212")
    assert second.lan_ip == IPv4Address("10.2.0.2")
    # the site's own gateway and host keep their plan
    assert (site.gateway.lan_ip, site.vm_ip, site.gateway.underlay_ip) == (
        IPv4Address("10.2.0.1"),
        IPv4Address("10.2.0.10"),
        IPv4Address("198.18.0.12"),
    )
    assert [g.node for g in plan.gateways] == ["gw1", "gw2", "gw2b", "gw3"]
    assert plan.gateway("gw2b") == second
    assert plan.namespaces() == ["wgl-gw1", "wgl-gw2", "wgl-gw2b", "wgl-gw3", "wgl-vm1", "wgl-vm2", "wgl-vm3"]
    with pytest.raises(ValidationError, match="no gateway 'gw1b'"):
        plan.gateway("gw1b")


def test_a_plain_lab_is_unchanged() -> None:
    plain, ha = plan_lab("wgl", 3), plan_lab("wgl", 3, ha_sites=[3])
    assert plain.ha_sites == () and plain.gateways == tuple(s.gateway for s in plain.sites)
    assert site_commands(plain, plain.site(1)) == site_commands(ha, ha.site(1))


def test_underlay_addresses_never_collide_with_hubs_or_sites() -> None:
    plan = plan_lab("wgl", MAX_SITES, ha_sites=range(1, MAX_HA_SITE + 1))
    hubs = {plan.underlay.network_address + i for i in (1, 2, 3)}
    addresses = [g.underlay_ip for g in plan.gateways]
    assert len(set(addresses)) == len(addresses)
    assert not hubs & set(addresses)
    assert all(a in plan.underlay and a != plan.underlay.broadcast_address for a in addresses)
    assert max(g.underlay_ip for g in plan.gateways if g.second) == IPv4Address("198.18.0.254")


@pytest.mark.parametrize(
    ("sites", "ha", "message"),
    [
        (3, [4], r"--ha-site 4: the lab has sites 1\.\.3"),
        (3, [0], r"--ha-site 0: the lab has sites 1\.\.3"),
        (
            50,
            [MAX_HA_SITE + 1],
            rf"--ha-site {MAX_HA_SITE + 1}: a second gateway fits sites 1\.\.{MAX_HA_SITE} only",
        ),
    ],
)
def test_ha_sites_are_checked(sites: int, ha: list[int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        plan_lab("wgl", sites, ha_sites=ha)


def test_preempt_rule_is_checked() -> None:
    with pytest.raises(ValidationError, match="--ha-preempt-after must be between 0 and 3600"):
        plan_lab("wgl", 2, ha_preempt_after=-1)


def test_the_ha_site_lan_is_a_bridge_on_the_vpc_host() -> None:
    plan = plan_lab("wgl", 2, ha_sites=[2])
    site = plan.site(2)
    commands = site_commands(plan, site)
    assert [c.args[2] for c in commands if c.args[:2] == ("netns", "add")] == [
        "wgl-gw2",
        "wgl-gw2b",
        "wgl-vm2",
    ]
    vm = [c.args for c in commands if c.netns == "wgl-vm2"]
    assert vm[0] == ("link", "add", "eth0", "type", "bridge")
    for port in ("gw2", "gw2b"):
        assert ("link", "set", port, "master", "eth0", "up") in vm
        assert ("link", "set", port, "addrgenmode", "none") in vm
    # the host's address on the bridge, named eth0 as on a plain site; its route to the mesh via gw2
    assert ("addr", "add", "10.2.0.10/24", "dev", "eth0") in vm
    assert vm[-1] == ("route", "add", "default", "via", "10.2.0.1")
    # each gateway's LAN veth ends on its own port of the bridge
    assert ("link", "add", "lan", "type", "veth", "peer", "name", "gw2b", "netns", "wgl-vm2") in [
        c.args for c in commands if c.netns == "wgl-gw2b"
    ]
    assert [c.args for c in commands if c.netns == "wgl-gw2b" and c.args[:2] == ("addr", "add")] == [
        ("addr", "add", "198.18.0.212/24", "dev", "eth0"),
        ("addr", "add", "10.2.0.2/24", "dev", "lan"),
    ]
    # gw2b has no default route either, and its uplink joins the underlay bridge
    assert not [c for c in commands if c.netns == "wgl-gw2b" and c.args[0] == "route"]
    assert ("link", "set", "wgl-g2b", "master", "wgl-br", "up") in [
        c.args for c in commands if c.netns is None
    ]
    created = [c.args[2] for c in build_commands(plan) if c.netns is None and c.args[:2] == ("link", "add")]
    assert created == ["wgl-br", "wgl-g1", "wgl-g2", "wgl-g2b"]


@given(lab_names)
def test_second_gateway_names_fit_and_carry_the_prefix(name: str) -> None:
    plan = plan_lab(name, MAX_SITES, ha_sites=[1, MAX_HA_SITE])
    for gateway in plan.gateways:
        for shared in (gateway.netns, gateway.uplink, gateway.wg_interface):
            assert owns(name, shared)
        for ifname in (gateway.uplink, gateway.wg_interface):
            assert len(ifname) <= IFNAMSIZ, ifname
    shared = [n for g in plan.gateways for n in (g.netns, g.uplink, g.wg_interface)]
    assert len(set(shared)) == len(shared)


def test_nodes_and_services_know_the_second_gateway() -> None:
    plan = plan_lab("wgl", 2, ha_sites=[2])
    node = resolve_node(plan, "gw2b")
    assert (node.role, node.netns, node.gateway) == ("gateway", "wgl-gw2b", plan.site(2).second)
    assert resolve_node(plan, "gw2").gateway == plan.site(2).gateway
    assert resolve_service(plan, "gw2b") == Service("gw2b", "agent", 2)
    for bad in ("gw1b", "vm2b", "gw3b", "gw2bb", "gwb"):
        with pytest.raises(ValidationError, match=r"has hub, gw1\.\.gw2, gw2b, vm1\.\.vm2"):
            resolve_node(plan, bad)
    with pytest.raises(ValidationError, match=r"it has hub, relay, gw1\.\.gw2, gw2b$"):
        resolve_service(plan, "gw1b")
    # without HA sites there is no `b` gateway at all
    with pytest.raises(ValidationError, match="unknown node"):
        resolve_node(plan_lab("wgl", 2), "gw2b")


def test_agents_of_an_ha_site_run_the_route_table_hook() -> None:
    plan = plan_lab("wgl", 2, slot=1, ha_sites=[2], ha_preempt_after=4.5)
    second = plan.site(2).second
    assert second is not None
    args = agent_args(plan, second, "tok", "userspace", python="/venv/bin/python")
    assert args[args.index("--name") + 1] == "gw2b"
    assert args[args.index("--advertise") + 1] == "10.2.0.0/24"
    assert args[args.index("--interface") + 1] == "wgl-wg2b"
    assert args[args.index("--state-dir") + 1] == "/run/wgmesh-lab/wgl/gw2b"
    assert args[args.index("--metrics-listen") + 1] == "198.18.1.212:9586"
    assert args[args.index("--site") + 1] == "vpc2"
    assert args[args.index("--ha-preempt-after") + 1] == "4.5"
    hook = shlex.split(args[args.index("--on-primary") + 1])
    assert hook == [
        "/venv/bin/python",
        "-m",
        "wgmesh.lab.route_table_hook",
        "--vm-netns",
        "wgl-vm2",
        "--via",
        "10.2.0.2",
    ]
    primary = agent_args(plan, plan.site(2), "tok", "userspace", python="/venv/bin/python")
    assert shlex.split(primary[primary.index("--on-primary") + 1])[-1] == "10.2.0.1"
    assert primary[primary.index("--site") + 1] == "vpc2"
    plain = agent_args(plan, plan.site(1), "tok", "userspace")
    assert "--on-primary" not in plain
    assert plain[plain.index("--site") + 1] == "vpc1"
    assert plain[plain.index("--ha-preempt-after") + 1] == "4.5"


def test_with_sites_keeps_ha_sites() -> None:
    plan = plan_lab("wgl", 2, ha_sites=[2]).with_sites(3)
    assert plan.ha_sites == (2,)
    assert [g.node for g in plan.gateways] == ["gw1", "gw2", "gw2b", "gw3"]
