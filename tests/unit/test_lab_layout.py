"""The lab plan: addresses per docs/lab.md, names that fit and never collide, commands that keep traffic in."""

from __future__ import annotations

import ipaddress
import os
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmesh.errors import ValidationError
from wgmesh.lab.layout import (
    MAX_SITES,
    IpCommand,
    LabPlan,
    Service,
    agent_args,
    build_commands,
    choose_slot,
    coordinator_args,
    coordinator_init_args,
    is_safe_destination,
    loopback_forward_script,
    owns,
    plan_lab,
    relay_args,
    relay_key_args,
    resolve_node,
    resolve_service,
    site_commands,
    underlay_commands,
    validate_name,
)
from wgmesh.lab.postgres import ClusterPaths
from wgmesh.lab.procs import cmdline

lab_names = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)
IFNAMSIZ = 15  # the kernel's limit on interface names


def shared_names(plan: LabPlan) -> set[str]:
    """Every name the lab creates in a machine-wide place: namespaces, root links, wg interfaces, nft table."""
    names = {plan.bridge, plan.nft_table}
    for s in plan.sites:
        names |= {s.gw_ns, s.vm_ns, s.uplink, s.wg_interface}
    return names


def test_default_plan_is_design_section_7() -> None:
    plan = plan_lab("wgl", 3)
    assert plan.underlay == IPv4Network("198.18.0.0/24")
    assert plan.hub_ip == IPv4Address("198.18.0.1")
    assert plan.hub_url == "https://198.18.0.1:8080"
    assert plan.local_url == "https://127.0.0.1:8080"
    for i, site in enumerate(plan.sites, start=1):
        assert site.index == i
        assert site.node == f"gw{i}"
        assert site.host == f"vm{i}"
        assert site.underlay_ip == IPv4Address(f"198.18.0.{10 + i}")
        assert site.lan == IPv4Network(f"10.{i}.0.0/24")
        assert site.gw_lan_ip == IPv4Address(f"10.{i}.0.1")
        assert site.vm_ip == IPv4Address(f"10.{i}.0.10")
        assert site.gw_ns == f"wgl-gw{i}"
        assert site.vm_ns == f"wgl-vm{i}"
        assert site.wg_interface == f"wgl-wg{i}"


def test_second_slot_moves_underlay_and_loopback_port_only() -> None:
    first, second = plan_lab("a", 2, slot=0), plan_lab("b", 2, slot=1)
    assert second.underlay == IPv4Network("198.18.1.0/24")
    assert second.hub_ip == IPv4Address("198.18.1.1")
    assert second.loopback_port == 8081
    assert [s.lan for s in first.sites] == [s.lan for s in second.sites]
    assert not first.underlay.overlaps(second.underlay)


@pytest.mark.parametrize("name", ["", "Wgl", "1ab", "a-b", "abcdefg", "a_b", "wg l"])
def test_bad_lab_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="lab name"):
        validate_name(name)


@pytest.mark.parametrize("sites", [0, -1, MAX_SITES + 1])
def test_site_count_is_bounded(sites: int) -> None:
    with pytest.raises(ValidationError, match="--sites"):
        plan_lab("wgl", sites)


@given(lab_names)
def test_interface_names_fit_even_at_the_limits(name: str) -> None:
    plan = plan_lab(name, MAX_SITES)
    for s in (plan.sites[0], plan.sites[-1]):
        for ifname in (s.uplink, s.wg_interface, plan.bridge):
            assert len(ifname) <= IFNAMSIZ, ifname


@given(lab_names)
def test_every_shared_name_carries_the_prefix(name: str) -> None:
    plan = plan_lab(name, 12)
    for shared in shared_names(plan) - {plan.nft_table}:
        assert owns(name, shared), shared
    assert plan.nft_table == f"wgmesh-lab-{name}"


@given(lab_names, lab_names)
def test_two_labs_never_claim_each_others_names(a: str, b: str) -> None:
    if a == b:
        return
    plan_a, plan_b = plan_lab(a, 12), plan_lab(b, 12, slot=1)
    assert not shared_names(plan_a) & shared_names(plan_b)
    assert not any(owns(a, n) for n in shared_names(plan_b))
    assert not any(owns(b, n) for n in shared_names(plan_a))


def test_prefix_of_a_longer_name_is_not_ownership() -> None:
    # "t1" must not sweep up "t12"'s namespaces in `down`.
    assert not owns("t1", "t12-gw1")
    assert owns("t1", "t1-gw1")
    assert not owns("t1", "t1-")
    assert not owns("t1", "t1")


def test_choose_slot_takes_the_lowest_free() -> None:
    assert choose_slot([]) == 0
    assert choose_slot([0, 1, 3]) == 2
    with pytest.raises(ValidationError, match="slots"):
        choose_slot(range(256))


def test_with_sites_grows_without_moving_existing_sites() -> None:
    plan = plan_lab("wgl", 3, slot=2, loopback_port=9000)
    grown = plan.with_sites(4)
    assert grown.sites[:3] == plan.sites
    assert grown.sites[3].underlay_ip == IPv4Address("198.18.2.14")
    assert grown.loopback_port == 9000


def test_resolve_node() -> None:
    plan = plan_lab("wgl", 2)
    hub = resolve_node(plan, "hub")
    assert hub.netns is None
    assert hub.role == "hub"
    assert resolve_node(plan, "gw2").netns == "wgl-gw2"
    vm = resolve_node(plan, "vm1")
    assert vm.netns == "wgl-vm1"
    assert vm.site is not None
    assert vm.site.index == 1
    for bad in ("gw3", "gw0", "vm01", "gw", "router1", "GW1"):
        with pytest.raises(ValidationError, match="unknown node"):
            resolve_node(plan, bad)


def test_root_namespace_gets_only_prefixed_links() -> None:
    plan = plan_lab("wgl", 3)
    created = [c.args[2] for c in build_commands(plan) if c.netns is None and c.args[:2] == ("link", "add")]
    assert created == ["wgl-br", "wgl-g1", "wgl-g2", "wgl-g3"]
    # The far ends of both veth pairs are created directly in their namespaces.
    for c in build_commands(plan):
        if c.args[:2] == ("link", "add") and "veth" in c.args:
            assert "netns" in c.args


def _routes(commands: list[IpCommand], netns: str) -> list[tuple[str, ...]]:
    return [c.args for c in commands if c.netns == netns and c.args[0] == "route"]


def test_gateways_have_no_default_route_and_hosts_route_via_their_gateway() -> None:
    plan = plan_lab("wgl", 2)
    for site in plan.sites:
        commands = site_commands(plan, site)
        assert _routes(commands, site.gw_ns) == []
        assert _routes(commands, site.vm_ns) == [("route", "add", "default", "via", str(site.gw_lan_ip))]


def test_every_address_is_inside_the_lab_plan() -> None:
    plan = plan_lab("wgl", 5, slot=3)
    lab_space = [IPv4Network("198.18.0.0/15"), *(s.lan for s in plan.sites)]
    addresses = [c.args[2] for c in build_commands(plan) if c.args[:2] == ("addr", "add")]
    assert len(addresses) == 1 + 3 * len(plan.sites)
    for text in addresses:
        iface = ipaddress.ip_interface(text)
        assert any(iface.ip in net for net in lab_space), text


def test_loopback_forward_targets_the_hub() -> None:
    plan = plan_lab("wgl", 1, slot=1)
    script = loopback_forward_script(plan)
    assert "table ip wgmesh-lab-wgl" in script
    assert "ip daddr 127.0.0.1 tcp dport 8081 dnat to 198.18.1.1:8080" in script


def test_safe_destinations() -> None:
    for ok in ("198.18.0.1", "198.19.255.254", "127.0.0.1"):
        assert is_safe_destination(ok)
    for bad in ("127.0.0.2", "10.0.0.1", "8.8.8.8", "198.20.0.1", "::1", "localhost", ""):
        assert not is_safe_destination(bad)


def test_process_command_lines_match_issue_3() -> None:
    plan = plan_lab("wgl", 2)
    args = agent_args(plan, plan.site(2), "tok", "userspace")
    assert args == [
        "--coordinator",
        "https://198.18.0.1:8080",
        "--token",
        "tok",
        "--name",
        "gw2",
        "--advertise",
        "10.2.0.0/24",
        "--interface",
        "wgl-wg2",
        "--backend",
        "userspace",
        "--state-dir",
        "/run/wgmesh-lab/wgl/gw2",
        "--metrics-listen",
        "198.18.0.12:9586",
        # issue 18: every agent names its site and the lab's preemption rule
        "--site",
        "vpc2",
        "--ha-preempt-after",
        "10",
    ]
    assert coordinator_args(plan) == [
        "--db",
        "sqlite:////run/wgmesh-lab/wgl/coordinator.db",
        "serve",
        "--listen",
        "198.18.0.1:8080",
        "--public-url",
        "https://198.18.0.1:8080",
        "--metrics-listen",
        "198.18.0.1:9585",
    ]


def test_relay_command_lines_match_issue_4() -> None:
    plan = plan_lab("wgl", 2, slot=3)
    db = "sqlite:////run/wgmesh-lab/wgl/coordinator.db"
    assert plan.relay_url == "tls://198.18.3.1:8443"
    pin = "sha256:" + "ab" * 32
    assert coordinator_args(plan, relay_pins=[pin])[-2:] == [
        "--announce-relay",
        f"tls://198.18.3.1:8443#{pin}",
    ]
    assert coordinator_init_args(plan) == ["--db", db, "init"]
    assert relay_key_args(plan) == ["--db", db, "relay-key"]
    assert relay_args(plan, "KEY=") == [
        "--listen",
        "198.18.3.1:8443",
        "--coordinator-key",
        "KEY=",
        "--state-dir",
        "/run/wgmesh-lab/wgl/relay",
        "--metrics-listen",
        "198.18.3.1:9587",
    ]
    assert relay_args(plan, "KEY=", pin)[-4:] == [
        "--coordinator",
        "https://198.18.3.1:8080",
        "--coordinator-pin",
        pin,
    ]
    host = relay_args(plan, "KEY=")[1].rpartition(":")[0]
    assert is_safe_destination(host)


def test_a_highly_available_lab_puts_each_hub_on_its_own_address() -> None:
    plan = plan_lab("wgl", 3, slot=2, db="postgresql", coordinators=2, relays=2)
    assert [str(a) for a in plan.hub_addresses] == ["198.18.2.1", "198.18.2.2"]
    assert plan.coordinator_urls == ("https://198.18.2.1:8080", "https://198.18.2.2:8080")
    db = "postgresql://wgmesh@/wgmesh?host=/run/wgmesh-lab/wgl/pg/run"
    pins = ["sha256:" + "ab" * 32, "sha256:" + "cd" * 32]
    second = coordinator_args(plan, 2, relay_pins=pins)
    assert second[:5] == ["--db", db, "serve", "--listen", "198.18.2.2:8080"]
    # every coordinator names them all, so that any token carries every URL, and announces every relay
    assert second[5:9] == ["--public-url", plan.coordinator_urls[0], "--public-url", plan.coordinator_urls[1]]
    assert second[-4:] == [
        "--announce-relay",
        f"tls://198.18.2.1:8443#{pins[0]}",
        "--announce-relay",
        f"tls://198.18.2.2:8443#{pins[1]}",
    ]
    relay2 = relay_args(plan, "KEY=", pins[0], 2)
    assert relay2[:2] == ["--listen", "198.18.2.2:8443"]
    assert "/run/wgmesh-lab/wgl/relay2" in relay2
    assert relay2.count("--coordinator") == 2
    # agents are spread over the coordinators, each listing all of them
    assert plan.coordinators_for(plan.site(1)) == list(plan.coordinator_urls)
    assert plan.coordinators_for(plan.site(2)) == list(reversed(plan.coordinator_urls))
    assert plan.coordinators_for(plan.site(3)) == list(plan.coordinator_urls)
    assert [c.args[-3:] for c in underlay_commands(plan) if "addr" in c.args] == [
        ("198.18.2.1/24", "dev", "wgl-br"),
        ("198.18.2.2/24", "dev", "wgl-br"),
    ]


def test_services_are_named_and_unknown_ones_refused() -> None:
    plan = plan_lab("wgl", 2, db="postgresql", coordinators=2, relays=2)
    assert resolve_service(plan, "hub") == Service("hub", "coordinator", 1)
    assert resolve_service(plan, "hub2") == Service("hub2", "coordinator", 2)
    assert resolve_service(plan, "relay2") == Service("relay2", "relay", 2)
    assert resolve_service(plan, "db") == Service("db", "database", 1)
    assert resolve_service(plan, "gw2") == Service("gw2", "agent", 2)
    for bad in ("hub3", "hub1", "relay1", "gw3", "vm1", "relay3", "x"):
        with pytest.raises(ValidationError, match="runs no process of lab wgl: it has hub, hub2, relay"):
            resolve_service(plan, bad)
    with pytest.raises(ValidationError, match=r"it has hub, relay, gw1\.\.gw2$"):
        resolve_service(plan_lab("wgl", 2), "db")


def test_several_coordinators_need_postgresql_and_hubs_are_bounded() -> None:
    with pytest.raises(ValidationError, match="add --db postgresql"):
        plan_lab("wgl", 2, coordinators=2)
    with pytest.raises(ValidationError, match="--relays must be between 1 and 3, not 4"):
        plan_lab("wgl", 2, relays=4)
    with pytest.raises(ValidationError, match="--coordinators must be between 1 and 3, not 0"):
        plan_lab("wgl", 2, db="postgresql", coordinators=0)


def test_a_postmaster_is_recognised_by_its_data_directory_only() -> None:
    cluster = ClusterPaths(Path("/run/wgmesh-lab/wgl/pg"))
    ours = ["/usr/lib/postgresql/15/bin/postgres", "-D", "/run/wgmesh-lab/wgl/pg/data", "-k", "x"]
    assert cluster.runs(ours)
    assert not cluster.runs(["/usr/lib/postgresql/15/bin/postgres", "-D", "/run/wgmesh-lab/wgl2/pg/data"])
    assert not cluster.runs(["setpriv", "--", *ours])  # not yet exec'd: not the postmaster
    assert not cluster.runs([])
    assert sys.executable in cmdline(os.getpid())[0] or cmdline(os.getpid())[0].endswith("python3")
    assert cmdline(2**22 + 1) == []


def test_the_default_convergence_budget_grows_with_the_gateways_beyond_four() -> None:
    # 60 s held 3 sites with room to spare; 12 sites (132 pairs, 12 agents starting on two cores) get more.
    assert plan_lab("t", 3).convergence_budget == 60.0
    assert plan_lab("t", 4).convergence_budget == 60.0
    assert plan_lab("t", 6).convergence_budget == 70.0
    assert plan_lab("t", 12).convergence_budget == 100.0
    # A site's second gateway is one more agent to wait for.
    assert plan_lab("t", 4, ha_sites=[1]).convergence_budget == 65.0
    assert plan_lab("t", 3).with_sites(12).convergence_budget == 100.0
