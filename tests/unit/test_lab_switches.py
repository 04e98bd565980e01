"""The lab's switches as text: site lists, pairs and rates parsed strictly, nftables and tc that touch only UDP
(or, for the TCP switch, only TCP between two gateways)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from wgmesh.cli.lab import SWITCHES as COMMANDS
from wgmesh.errors import ValidationError
from wgmesh.lab import switches
from wgmesh.lab.impair import (
    GATEWAY_UPLINK,
    TCP_TABLE,
    UDP_TABLE,
    block_tcp_script,
    block_udp_script,
    check_pairs,
    check_sites,
    describe,
    parse_pair,
    parse_pairs,
    parse_rate,
    parse_sites,
    parse_throttles,
    tcp_peers,
    tcp_scripts,
    throttle_commands,
    unblock_tcp_script,
    unblock_udp_script,
    unthrottle_commands,
)
from wgmesh.lab.layout import plan_lab
from wgmesh.lab.record import LabState
from wgmesh.lab.switches import Switch, dropped, joined, left, set_tcp_blocked, valued


def test_parse_sites_sorts_and_dedups() -> None:
    assert parse_sites("3,1,3") == [1, 3]
    assert parse_sites(" 2 ") == [2]


@pytest.mark.parametrize("text", ["", ",", "1,", "a", "1;2", "-1", "1.0", "0", "201", "gw1"])
def test_parse_sites_refuses_what_is_not_a_list_of_sites(text: str) -> None:
    with pytest.raises(ValidationError, match="--block-udp"):
        parse_sites(text, "--block-udp")


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10mbit", "10mbit"),
        ("10MBIT", "10mbit"),
        ("1.5mbit", "1500kbit"),
        ("10000kbit", "10mbit"),
        ("8kbit", "8kbit"),
        ("10gbit", "10gbit"),
        ("12345bit", "12345bit"),
    ],
)
def test_parse_rate_normalises(text: str, rate: str) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    "text", ["", "10", "fast", "10mbps", "10 mbit", "-1mbit", "7kbit", "11gbit", "1e3mbit"]
)
def test_parse_rate_refuses_bad_rates(text: str) -> None:
    # "mbps" is refused on purpose: tc reads it as megabytes per second, eight times what it looks like.
    with pytest.raises(ValidationError, match="rate"):
        parse_rate(text)


def test_parse_throttles_takes_repeats_and_comma_lists() -> None:
    assert parse_throttles(["2=5mbit,1=10mbit", "3=1gbit"]) == {1: "10mbit", 2: "5mbit", 3: "1gbit"}
    assert parse_throttles(["1=5mbit", "1=6mbit"]) == {1: "6mbit"}
    assert parse_throttles([]) == {}


@pytest.mark.parametrize("item", ["1", "1=", "=10mbit", "x=10mbit", "1=fast", "1:10mbit"])
def test_parse_throttles_refuses_bad_items(item: str) -> None:
    with pytest.raises(ValidationError):
        parse_throttles([item])


def test_check_sites_names_the_switch_and_the_range() -> None:
    plan = plan_lab("wgl", 2)
    check_sites(plan, [1, 2], "--block-udp")
    with pytest.raises(ValidationError, match=r"--p2p-off: unknown site 3 \(lab wgl has sites 1..2\)"):
        check_sites(plan, [3], "--p2p-off")


def test_block_script_drops_only_udp_on_the_underlay_link_and_replaces_itself() -> None:
    script = block_udp_script()
    lines = [line.strip() for line in script.splitlines()]
    # add + delete first: one transaction that works whether or not the table exists (idempotent).
    assert lines[:3] == [
        f"add table inet {UDP_TABLE}",
        f"delete table inet {UDP_TABLE}",
        f"table inet {UDP_TABLE} {{",
    ]
    rules = [line for line in lines if line.endswith("drop")]
    assert rules == [
        f'iifname "{GATEWAY_UPLINK}" meta l4proto udp counter drop',
        f'iifname "{GATEWAY_UPLINK}" meta l4proto udp counter drop',
        f'oifname "{GATEWAY_UPLINK}" meta l4proto udp counter drop',
        f'oifname "{GATEWAY_UPLINK}" meta l4proto udp counter drop',
    ]
    # Policies accept: TCP (the coordinator, the relay) is never touched.
    assert script.count("policy accept;") == 3
    assert "policy drop" not in script
    assert {"hook input", "hook forward", "hook output"} <= {
        " ".join(line.split()[2:4]) for line in lines if line.startswith("type filter")
    }


def test_unblock_script_is_idempotent() -> None:
    assert unblock_udp_script() == f"add table inet {UDP_TABLE}\ndelete table inet {UDP_TABLE}\n"


def test_throttle_shapes_udp_both_ways_and_leaves_the_rest_unlimited() -> None:
    plan = plan_lab("wgl", 3, slot=1)
    site = plan.site(2)
    commands = throttle_commands(site, "10mbit")
    # Gateway -> underlay on eth0 inside the namespace; underlay -> gateway on the root-side veth end.
    assert {(c.netns, c.args[3]) for c in commands} == {
        ("wgl-gw2", "eth0"),
        (None, "wgl-g2"),
    }
    for netns in ("wgl-gw2", None):
        lines = [" ".join(c.args[4:]) for c in commands if c.netns == netns]
        assert lines == [
            "root handle 1: htb default 10",
            "parent 1: classid 1:10 htb rate 100gbit quantum 60000",
            "parent 1: classid 1:20 htb rate 10mbit ceil 10mbit quantum 1514",
            "parent 1:20 handle 20: pfifo limit 8",
            "parent 1: protocol ip prio 1 u32 match ip protocol 17 0xff flowid 1:20",
        ]
    # Only names the lab owns are touched in the root namespace.
    assert all(c.args[3].startswith("wgl-") for c in commands if c.netns is None)


def test_unthrottle_removes_both_root_qdiscs() -> None:
    site = plan_lab("wgl", 1).site(1)
    assert [(c.netns, c.args) for c in unthrottle_commands(site)] == [
        ("wgl-gw1", ("qdisc", "del", "dev", "eth0", "root")),
        (None, ("qdisc", "del", "dev", "wgl-g1", "root")),
    ]


def test_describe() -> None:
    assert describe([1], {2: "10mbit"}, [3]) == [
        "gw1: UDP blocked",
        "gw2: UDP throttled to 10mbit",
        "gw3: p2p off",
    ]
    assert describe([], {}, []) == []


def _state() -> LabState:
    return LabState(
        name="wgl", slot=1, loopback_port=8081, sites=2, backend="userspace", agents=True, admin_token="t"
    )


def test_record_entries_follow_a_switch_on_and_off() -> None:
    assert joined([3, 1], 2) == [1, 2, 3]
    assert joined([1, 2], 2) == [1, 2]
    assert left([1, 2], 2) == [1]
    assert left([1], 2) == [1]
    assert valued({3: "1mbit"}, 1, "10mbit") == {1: "10mbit", 3: "1mbit"}
    assert list(valued({3: "x", 1: "y"}, 2, "z")) == [1, 2, 3]
    assert dropped({1: "x", 2: "y"}, 1) == {2: "y"}
    assert dropped({2: "y"}, 1) == {2: "y"}


@pytest.mark.parametrize(
    ("switch", "value", "match"),
    [
        (switches.SET_LAN_MTU, 100, "LAN MTU"),
        (switches.SET_UNDERLAY_MTU, 1279, "underlay MTU"),
        (switches.THROTTLE_UDP, "fast", "rate"),
    ],
)
def test_a_bad_value_is_refused_before_anything_changes(
    switch: Switch[object], value: object, match: str
) -> None:
    # No root here: reaching the machine or the record file would fail differently.
    state = _state()
    before = state.model_copy(deep=True)
    with pytest.raises(ValidationError, match=match):
        switch.flip(state, 1, value)
    assert state == before


def test_each_switch_has_a_command_and_a_pair_shares_its_record_entry() -> None:
    table = {name: value for name, value in vars(switches).items() if isinstance(value, Switch)}
    assert {c.switch for c in COMMANDS} == set(table.values())
    assert table["BLOCK_UDP"].entry == table["UNBLOCK_UDP"].entry == "blocked_udp"
    assert table["SG_DROP_ICMP"].entry == table["SG_ALLOW_ICMP"].entry == "sg_drop_icmp"
    assert table["SG_DROP_ICMP"].on_host and not table["BLOCK_UDP"].on_host


# --- TCP blocked between two gateways ---


@pytest.mark.parametrize(("text", "pair"), [("1,2", (1, 2)), ("2,1", (1, 2)), (" 3 , 10 ", (3, 10))])
def test_parse_pair_puts_the_lower_site_first(text: str, pair: tuple[int, int]) -> None:
    assert parse_pair(text, "--block-tcp-between") == pair


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1,1", "'1,1': a pair is two different sites"),
        ("1", "'1' must be two site numbers separated by a comma, e.g. 1,2"),
        ("1,2,3", "'1,2,3' must be two site numbers"),
        ("", "'' must be two site numbers"),
        ("1,", "'1,' must be two site numbers"),
        ("1;2", "'1;2' must be two site numbers"),
        ("gw1,gw2", "'gw1,gw2' must be two site numbers"),
        ("-1,2", "'-1,2' must be two site numbers"),
        ("0,1", "'0,1': site 0 is not between 1 and 200"),
        ("1,201", "'1,201': site 201 is not between 1 and 200"),
    ],
)
def test_parse_pair_refuses_what_is_not_two_distinct_sites(text: str, why: str) -> None:
    with pytest.raises(ValidationError, match=f"^--block-tcp-between {why}") as info:
        parse_pair(text, "--block-tcp-between")
    assert info.value.code == "invalid_pair"


def test_parse_pairs_takes_repeats_one_pair_each() -> None:
    assert parse_pairs(["1,3", "2,1", "1,2"]) == [(1, 2), (1, 3)]
    assert parse_pairs([]) == []
    with pytest.raises(ValidationError, match="--block-tcp-between '1,2,3'"):
        parse_pairs(["1,2,3"])


def test_check_pairs_takes_pairs_from_python() -> None:
    assert check_pairs([(2, 1), [1, 3], (1, 2)], "--block-tcp-between") == [(1, 2), (1, 3)]
    with pytest.raises(ValidationError, match="'2,2': a pair is two different sites"):
        check_pairs([(2, 2)], "--block-tcp-between")
    with pytest.raises(ValidationError, match=r"\[1, 2, 3\]: a pair is two sites"):
        check_pairs([(1, 2, 3)], "--block-tcp-between")


def test_block_tcp_script_drops_only_tcp_to_and_from_its_peers_and_replaces_itself() -> None:
    script = block_tcp_script([IPv4Address("198.18.1.13"), IPv4Address("198.18.1.12")])
    lines = [line.strip() for line in script.splitlines()]
    # Its own table: the UDP switch on the same gateway neither replaces nor removes it.
    assert TCP_TABLE != UDP_TABLE
    assert lines[:3] == [
        f"add table inet {TCP_TABLE}",
        f"delete table inet {TCP_TABLE}",
        f"table inet {TCP_TABLE} {{",
    ]
    # One set of peer addresses, sorted: several pairs live in one table.
    assert "elements = { 198.18.1.12, 198.18.1.13 }" in lines
    assert [line for line in lines if line.endswith("drop")] == [
        "ip saddr @peers meta l4proto tcp counter drop",
        "ip daddr @peers meta l4proto tcp counter drop",
    ]
    # Everything else passes: UDP, TCP to any other address (coordinator, relay, other gateways).
    assert script.count("policy accept;") == 2
    assert "policy drop" not in script and "udp" not in script
    assert [" ".join(line.split()[2:4]) for line in lines if line.startswith("type filter")] == [
        "hook input",
        "hook output",
    ]
    with pytest.raises(ValueError, match="no peer addresses"):
        block_tcp_script([])


def test_unblock_tcp_script_is_idempotent() -> None:
    assert unblock_tcp_script() == f"add table inet {TCP_TABLE}\ndelete table inet {TCP_TABLE}\n"


def test_tcp_peers() -> None:
    pairs = [(1, 2), (1, 3), (2, 3)]
    assert tcp_peers(pairs, 1) == [2, 3]
    assert tcp_peers(pairs, 3) == [1, 2]
    assert tcp_peers([(1, 2)], 3) == []


def _peers(script: str) -> list[str]:
    """The addresses in a TCP table script's set."""
    (line,) = [line.strip() for line in script.splitlines() if line.strip().startswith("elements")]
    return line.removeprefix("elements = {").removesuffix("}").replace(",", " ").split()


def test_tcp_scripts_put_both_gateways_in_and_keep_every_pair_of_each() -> None:
    plan = plan_lab("wgl", 3, slot=1)
    gw = {i: str(plan.site(i).underlay_ip) for i in (1, 2, 3)}
    scripts = tcp_scripts(plan, [(1, 2), (1, 3)], (1, 2))
    # Only the two gateways of the pair that changed, each blocking its peers' underlay addresses and
    # nothing else: the coordinator and the relay (the hub addresses) stay reachable.
    assert set(scripts) == {"wgl-gw1", "wgl-gw2"}
    assert _peers(scripts["wgl-gw1"]) == [gw[2], gw[3]]
    assert _peers(scripts["wgl-gw2"]) == [gw[1]]
    # Unblocking (1, 2) while (1, 3) holds: gw1 keeps gw3 blocked, gw2 has nothing left, so no table.
    scripts = tcp_scripts(plan, [(1, 3)], (1, 2))
    assert _peers(scripts["wgl-gw1"]) == [gw[3]]
    assert scripts["wgl-gw2"] == unblock_tcp_script()


def test_describe_tcp_pairs() -> None:
    assert describe([], {}, [], blocked_tcp=[(1, 2), (2, 3)]) == [
        "gw1 <-> gw2: TCP blocked between their underlay addresses",
        "gw2 <-> gw3: TCP blocked between their underlay addresses",
    ]


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [(1, 1, "a pair is two different sites"), (1, 3, "lab wgl has sites 1..2, not 3"), (0, 2, "site 0")],
)
def test_a_bad_tcp_pair_is_refused_before_anything_changes(a: int, b: int, match: str) -> None:
    # No root here: reaching the machine or the record file would fail differently.
    state = _state()
    before = state.model_copy(deep=True)
    for blocked in (True, False):
        with pytest.raises(ValidationError, match=match):
            set_tcp_blocked(state, a, b, blocked=blocked)
    assert state == before


def test_the_record_keeps_tcp_pairs_and_reads_records_without_them() -> None:
    state = _state()
    assert state.blocked_tcp == []
    state.blocked_tcp = [(1, 2)]
    again = LabState.model_validate_json(state.model_dump_json())
    assert again.blocked_tcp == [(1, 2)]
    assert LabState.model_validate_json(_state().model_dump_json(exclude={"blocked_tcp"})).blocked_tcp == []
