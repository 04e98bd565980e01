"""The lab's cloud-like switches as text (issue 13): MTUs parsed strictly and set on both ends of the right
veth, and a security group that drops only inbound ICMP unreachables on the VPC host's link."""

from __future__ import annotations

from pathlib import Path

import pytest

from wgmesh.errors import ValidationError
from wgmesh.lab import up
from wgmesh.lab.cloud import (
    LAN_MTU,
    SG_TABLE,
    UNDERLAY_MTU,
    MtuRange,
    check_mtu,
    lan_mtu_commands,
    parse_mtu,
    parse_mtus,
    sg_allow_icmp_script,
    sg_drop_icmp_script,
    underlay_mtu_commands,
    with_mtu,
)
from wgmesh.lab.impair import describe
from wgmesh.lab.layout import plan_lab
from wgmesh.lab.record import LabState, load, save


@pytest.mark.parametrize(
    ("limits", "text", "mtu"),
    [
        (LAN_MTU, "9001", 9001),
        (LAN_MTU, " 576 ", 576),
        (LAN_MTU, "9216", 9216),
        (UNDERLAY_MTU, "1460", 1460),
        (UNDERLAY_MTU, "1280", 1280),
    ],
)
def test_parse_mtu(limits: MtuRange, text: str, mtu: int) -> None:
    assert parse_mtu(text, limits) == mtu


@pytest.mark.parametrize(
    ("limits", "text"),
    [
        (LAN_MTU, "575"),
        (LAN_MTU, "9217"),
        (LAN_MTU, "65535"),
        (LAN_MTU, ""),
        (LAN_MTU, "9001.0"),
        (LAN_MTU, "-1500"),
        (LAN_MTU, "jumbo"),
        (UNDERLAY_MTU, "1279"),
        (UNDERLAY_MTU, "576"),
        (UNDERLAY_MTU, "1e3"),
    ],
)
def test_parse_mtu_refuses_what_is_out_of_range_or_not_a_number(limits: MtuRange, text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_mtu(text, limits)
    assert caught.value.message == (
        f"{limits.what} {text!r} must be a whole number between {limits.low} and {limits.high}"
    )


def test_parse_mtus_takes_repeats_and_comma_lists_and_the_last_wins() -> None:
    assert parse_mtus(["2=9001,1=1500", "3=576"], LAN_MTU) == {1: 1500, 2: 9001, 3: 576}
    assert parse_mtus(["1=9001", "1=8000"], LAN_MTU) == {1: 8000}
    assert parse_mtus([], UNDERLAY_MTU) == {}


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("1", "--lan-mtu '1' must be SITE=MTU, e.g. 1=9001"),
        ("1=", "--lan-mtu '1=' must be SITE=MTU"),
        ("=9001", "--lan-mtu site '' must be site numbers"),
        ("x=9001", "--lan-mtu site 'x' must be site numbers"),
        ("0=9001", "site 0 is not between 1 and 200"),
        ("1:9001", "--lan-mtu '1:9001' must be SITE=MTU"),
        ("1=10000", "LAN MTU '10000' must be a whole number between 576 and 9216"),
        ("1=9001,2=big", "LAN MTU 'big' must be a whole number"),
    ],
)
def test_parse_mtus_refuses_bad_items(item: str, needle: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_mtus([item], LAN_MTU)
    assert needle in caught.value.message
    assert "\n" not in caught.value.message


def test_underlay_floor_is_ipv6s_minimum_link_mtu() -> None:
    with pytest.raises(
        ValidationError, match="underlay MTU '1200' must be a whole number between 1280 and 9216"
    ):
        parse_mtus(["2=1200"], UNDERLAY_MTU)


def test_check_mtu_names_the_switch() -> None:
    assert check_mtu(1460, UNDERLAY_MTU) == 1460
    with pytest.raises(
        ValidationError, match=r"^--underlay-mtu: underlay MTU 1000 is not between 1280 and 9216$"
    ):
        check_mtu(1000, UNDERLAY_MTU)
    with pytest.raises(ValidationError, match=r"^--lan-mtu: LAN MTU 9500 is not between 576 and 9216$"):
        check_mtu(9500, LAN_MTU)


def test_lan_mtu_sets_both_ends_of_the_lan_veth() -> None:
    site = plan_lab("wgl", 3, slot=1).site(2)
    assert [(c.netns, c.args) for c in lan_mtu_commands(site, 9001)] == [
        ("wgl-gw2", ("link", "set", "dev", "lan", "mtu", "9001")),
        ("wgl-vm2", ("link", "set", "dev", "eth0", "mtu", "9001")),
    ]


def test_lan_mtu_of_an_ha_site_sets_both_gateways_the_bridge_ports_then_the_bridge() -> None:
    site = plan_lab("wgl", 3, slot=1, ha_sites=[2]).site(2)
    assert [(c.netns, c.args) for c in lan_mtu_commands(site, 9001)] == [
        ("wgl-gw2", ("link", "set", "dev", "lan", "mtu", "9001")),
        ("wgl-gw2b", ("link", "set", "dev", "lan", "mtu", "9001")),
        ("wgl-vm2", ("link", "set", "dev", "gw2", "mtu", "9001")),
        ("wgl-vm2", ("link", "set", "dev", "gw2b", "mtu", "9001")),
        ("wgl-vm2", ("link", "set", "dev", "eth0", "mtu", "9001")),
    ]


def test_underlay_mtu_sets_both_ends_of_the_gateway_uplink_and_touches_only_lab_links() -> None:
    site = plan_lab("wgl", 3, slot=1).site(2)
    commands = underlay_mtu_commands(site, 1460)
    assert [(c.netns, c.args) for c in commands] == [
        ("wgl-gw2", ("link", "set", "dev", "eth0", "mtu", "1460")),
        (None, ("link", "set", "dev", "wgl-g2", "mtu", "1460")),
    ]
    # In the root namespace only the site's own veth end, never the bridge or a host link.
    assert all(c.args[3].startswith("wgl-g") for c in commands if c.netns is None)


def test_with_mtu_records_only_what_differs_from_the_default() -> None:
    assert with_mtu({}, 2, 9001) == {2: 9001}
    assert with_mtu({2: 9001}, 1, 8000) == {1: 8000, 2: 9001}
    assert with_mtu({1: 8000, 2: 9001}, 2, 1500) == {1: 8000}
    assert with_mtu({}, 1, 1500) == {}


def test_security_group_drops_only_inbound_icmp_unreachables_on_eth0_and_replaces_itself() -> None:
    script = sg_drop_icmp_script()
    lines = [line.strip() for line in script.splitlines()]
    assert lines[:3] == [
        f"add table inet {SG_TABLE}",
        f"delete table inet {SG_TABLE}",
        f"table inet {SG_TABLE} {{",
    ]
    assert [line for line in lines if line.endswith("drop")] == [
        'iifname "eth0" icmp type destination-unreachable counter drop',
        'iifname "eth0" icmpv6 type { destination-unreachable, packet-too-big } counter drop',
    ]
    # One input chain that accepts everything else: echo, TCP and UDP are untouched, nothing outbound is.
    assert [line for line in lines if line.startswith("type filter")] == [
        "type filter hook input priority -10; policy accept;"
    ]
    assert "policy drop" not in script


def test_security_group_removal_is_idempotent() -> None:
    assert sg_allow_icmp_script() == f"add table inet {SG_TABLE}\ndelete table inet {SG_TABLE}\n"


def test_describe_shows_the_cloud_switches() -> None:
    assert describe([], {}, [], lan_mtu={1: 9001}, underlay_mtu={2: 1460}, sg_drop_icmp=[1, 2]) == [
        "gw2: underlay MTU 1460",
        "vm1: LAN MTU 9001 (and gw1's lan)",
        "vm1: inbound ICMP unreachable dropped (security group)",
        "vm2: inbound ICMP unreachable dropped (security group)",
    ]
    assert describe([1], {}, []) == ["gw1: UDP blocked"]
    assert describe([], {}, [], lan_mtu={2: 9001}, ha_sites=[2]) == [
        "vm2: LAN MTU 9001 (and gw2's and gw2b's lan)"
    ]


def test_state_keeps_the_switches_and_reads_files_written_before_them(tmp_path: Path) -> None:
    state = LabState(
        name="wgl",
        slot=0,
        loopback_port=8080,
        sites=2,
        backend="userspace",
        agents=True,
        admin_token="t",
        lan_mtu={1: 9001},
        underlay_mtu={2: 1460},
        sg_drop_icmp=[1, 2],
    )
    save(state, tmp_path)
    again = load("wgl", tmp_path)
    assert again is not None
    assert (again.lan_mtu, again.underlay_mtu, again.sg_drop_icmp) == ({1: 9001}, {2: 1460}, [1, 2])
    old = state.model_dump(mode="json", exclude={"lan_mtu", "underlay_mtu", "sg_drop_icmp"})
    before = LabState.model_validate(old)
    assert (before.lan_mtu, before.underlay_mtu, before.sg_drop_icmp) == ({}, {}, [])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lan_mtu": {3: 9001}}, "--lan-mtu: unknown site 3 (lab zq has sites 1..2)"),
        ({"lan_mtu": {1: 100}}, "--lan-mtu: LAN MTU 100 is not between 576 and 9216"),
        ({"underlay_mtu": {2: 1279}}, "--underlay-mtu: underlay MTU 1279 is not between 1280 and 9216"),
        ({"underlay_mtu": {5: 1460}}, "--underlay-mtu: unknown site 5 (lab zq has sites 1..2)"),
        ({"sg_drop_icmp": [1, 4]}, "--sg-drop-icmp: unknown site 4 (lab zq has sites 1..2)"),
    ],
)
def test_up_refuses_bad_switches_before_touching_anything(options: dict[str, object], message: str) -> None:
    # Refused before the root check and before any state is written, so this runs anywhere.
    with pytest.raises(ValidationError) as caught:
        up("zq", 2, **options)  # type: ignore[arg-type]
    assert caught.value.message == message
