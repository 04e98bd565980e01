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
    ],
)
def test_bad_switch_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    done = run_cli("lab", *args, "--name", NAME, env=base_env(tmp_path))
    assert done.code == 2, done.err
    assert done.out == ""
    assert needle in done.one_line_error()


def test_switch_on_a_lab_that_is_not_up_is_exit_1(tmp_path: Path) -> None:
    done = run_cli("lab", "block-udp", "1", "--name", NAME, env=base_env(tmp_path))
    assert done.code == 1, done.err
    assert f"lab {NAME} is not up" in done.one_line_error()
