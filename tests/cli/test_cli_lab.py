"""`wgmesh lab` switches: bad input is exit 2 with one readable line, found before anything is built or changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_harness import base_env, run_cli

# A lab name no test builds: every command below must fail before it would look for one.
NAME = "zqx9"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("up", "--block-udp", "x"), "--block-udp 'x' must be site numbers separated by commas"),
        (("up", "--block-udp", "1,,2"), "--block-udp '1,,2' must be site numbers"),
        (("up", "--sites", "2", "--block-udp", "3"), "--block-udp: unknown site 3 (lab zqx9 has sites 1..2)"),
        (("up", "--throttle-udp", "1=fast"), "rate 'fast' must be a number and a unit"),
        (("up", "--throttle-udp", "1=10mbps"), "rate '10mbps' must be a number and a unit"),
        (("up", "--throttle-udp", "1"), "--throttle-udp '1' must be SITE=RATE"),
        (("up", "--sites", "2", "--throttle-udp", "4=10mbit"), "--throttle-udp: unknown site 4"),
        (("up", "--p2p-off", "gw1"), "--p2p-off 'gw1' must be site numbers"),
        (("up", "--sites", "2", "--p2p-off", "5"), "--p2p-off: unknown site 5"),
        (("up", "--p2p-off", "1", "--no-agents"), "--p2p-off needs agents"),
        (("up", "--p2p-off", "1", "--no-relay"), "--p2p-off needs the relay"),
        (("block-udp", "0"), "site 0 is not between 1 and 200"),
        (("unblock-udp", "a,b"), "site list 'a,b' must be site numbers"),
        (("throttle-udp", "1", "10"), "rate '10' must be a number and a unit"),
        (("throttle-udp", "1", "99gbit"), "rate '99gbit' must be between 8kbit and 10gbit"),
        (("throttle-udp", "1"), "the following arguments are required: RATE"),
        (("unthrottle-udp", ""), "site list '' must be site numbers"),
        (("up", "--block-tcp-between", "1,1"), "--block-tcp-between '1,1': a pair is two different sites"),
        (
            ("up", "--block-tcp-between", "1"),
            "--block-tcp-between '1' must be two site numbers separated by a comma, e.g. 1,2",
        ),
        (("up", "--block-tcp-between", "1,2,3"), "--block-tcp-between '1,2,3' must be two site numbers"),
        (("up", "--block-tcp-between", "1,x"), "--block-tcp-between '1,x' must be two site numbers"),
        (("up", "--block-tcp-between", "0,1"), "--block-tcp-between '0,1': site 0 is not between 1 and 200"),
        (
            ("up", "--sites", "2", "--block-tcp-between", "1,3"),
            "--block-tcp-between: unknown site 3 (lab zqx9 has sites 1..2)",
        ),
        (
            ("up", "--sites", "3", "--block-tcp-between", "1,2", "--block-tcp-between", "2,4"),
            "--block-tcp-between: unknown site 4 (lab zqx9 has sites 1..3)",
        ),
        (("block-tcp", "2,2"), "site pair '2,2': a pair is two different sites"),
        (("block-tcp", "1,2", "3"), "site pair '3' must be two site numbers separated by a comma"),
        (("unblock-tcp", "1,2,3"), "site pair '1,2,3' must be two site numbers"),
        (("block-tcp",), "the following arguments are required: I,J"),
        (("up", "--lan-mtu", "1"), "--lan-mtu '1' must be SITE=MTU, e.g. 1=9001"),
        (("up", "--lan-mtu", "1=9217"), "LAN MTU '9217' must be a whole number between 576 and 9216"),
        (("up", "--lan-mtu", "1=9001,x=9001"), "--lan-mtu site 'x' must be site numbers"),
        (
            ("up", "--sites", "2", "--lan-mtu", "3=9001"),
            "--lan-mtu: unknown site 3 (lab zqx9 has sites 1..2)",
        ),
        (
            ("up", "--underlay-mtu", "2=1200"),
            "underlay MTU '1200' must be a whole number between 1280 and 9216",
        ),
        (("up", "--underlay-mtu", "2=65536"), "underlay MTU '65536' must be a whole number"),
        (("up", "--sites", "2", "--underlay-mtu", "4=1460"), "--underlay-mtu: unknown site 4"),
        (("up", "--sg-drop-icmp", "vm1"), "--sg-drop-icmp 'vm1' must be site numbers"),
        (("up", "--sites", "2", "--sg-drop-icmp", "1,3"), "--sg-drop-icmp: unknown site 3"),
        (("lan-mtu", "1", "9001.5"), "LAN MTU '9001.5' must be a whole number between 576 and 9216"),
        (("lan-mtu", "1"), "the following arguments are required: MTU"),
        (("underlay-mtu", "1", "1000"), "underlay MTU '1000' must be a whole number between 1280 and 9216"),
        (("underlay-mtu", "x", "1460"), "site list 'x' must be site numbers"),
        (("sg-drop-icmp", "0"), "site 0 is not between 1 and 200"),
        (("sg-allow-icmp", "1;2"), "site list '1;2' must be site numbers"),
        (
            ("up", "--coordinators", "2"),
            "several coordinators share one PostgreSQL database: add --db postgresql",
        ),
        (
            ("up", "--db", "postgresql", "--coordinators", "4"),
            "--coordinators must be between 1 and 3, not 4",
        ),
        (("up", "--relays", "0"), "--relays must be between 1 and 3, not 0"),
        (("up", "--relays", "2", "--no-relay"), "--relays needs the relay; drop --no-relay"),
        (("up", "--db", "mysql"), "argument --db: invalid choice: 'mysql'"),
        (("kill", "hub", "--signal", "HUP"), "argument --signal: invalid choice: 'HUP'"),
        (("move-to-postgresql", "--coordinators", "9"), "--coordinators must be between 1 and 3, not 9"),
        (("up", "--sites", "2", "--ha-site", "3"), "--ha-site 3: the lab has sites 1..2"),
        (("up", "--ha-site", "b"), "--ha-site 'b' must be site numbers"),
        (("up", "--sites", "50", "--ha-site", "45"), "--ha-site 45: a second gateway fits sites 1..44 only"),
        (("up", "--ha-preempt-after", "-1"), "--ha-preempt-after must be between 0 and 3600 seconds, not -1"),
        (("up", "--ha-preempt-after", "soon"), "argument --ha-preempt-after: invalid float value: 'soon'"),
    ],
)
def test_bad_switch_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    done = run_cli("lab", *args, "--name", NAME, env=base_env(tmp_path))
    assert done.code == 2, done.err
    assert done.out == ""
    assert needle in done.one_line_error()


@pytest.mark.parametrize(
    "args",
    [
        ("block-udp", "1"),
        ("lan-mtu", "1", "9001"),
        ("underlay-mtu", "2", "1460"),
        ("sg-drop-icmp", "1"),
        ("block-tcp", "1,2"),
        ("unblock-tcp", "2,1", "1,3"),
    ],
)
def test_switch_on_a_lab_that_is_not_up_is_exit_1(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = run_cli("lab", *args, "--name", NAME, env=base_env(tmp_path))
    assert done.code == 1, done.err
    assert f"lab {NAME} is not up" in done.one_line_error()
