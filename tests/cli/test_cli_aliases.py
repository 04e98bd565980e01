"""`wgmesh routes alias` and `wgmesh network set --alias-pool` (issue 20), against a real coordinator: two
sites of one CIDR, the later one in conflict until it has an alias; the listing shows where each VPC is
reached."""

from __future__ import annotations

import httpx
import pytest
from cli_harness import Cli
from coordinator_harness import Coordinator, Enrolled, enroll, netmap, peers_by_name

LAN = "172.31.0.0/16"


@pytest.fixture(scope="module")
def sites(wgmesh: Cli, coordinator: Coordinator, admin: httpx.Client) -> dict[str, Enrolled]:
    r = wgmesh("tokens", "create", "--reusable", "--allow-subnet", "172.16.0.0/12")
    assert r.code == 0, r.err
    token = r.out.strip()
    with coordinator.anonymous() as anon:
        return {
            "gw-use1": enroll(anon, token, "gw-use1", subnets=[LAN], site="use1"),
            "gw-euw1": enroll(anon, token, "gw-euw1", subnets=[LAN], site="euw1"),
            "vm": enroll(anon, token, "vm"),
        }


def test_the_conflict_says_how_to_resolve_it(
    wgmesh: Cli, cli_env: dict[str, str], sites: dict[str, Enrolled]
) -> None:
    table = wgmesh("routes", env=cli_env | {"COLUMNS": "400"})
    assert table.code == 0, table.err
    line = next(ln for ln in table.out.splitlines() if "conflict" in ln)
    assert f"wgmesh routes alias {LAN} --node gw-euw1 --as PREFIX" in line


def test_an_alias_from_the_command_line_is_listed_and_routed(
    wgmesh: Cli, cli_env: dict[str, str], coordinator: Coordinator, sites: dict[str, Enrolled]
) -> None:
    r = wgmesh("routes", "alias", LAN, "--node", "gw-euw1", "--as", "10.201.0.0/16")
    assert r.code == 0, r.err
    assert f"{LAN} at gw-euw1 as 10.201.0.0/16: active" in r.out
    table = wgmesh("routes", env=cli_env | {"COLUMNS": "200"})
    assert f"{LAN} as 10.201.0.0/16" in table.out
    listed = {(x["prefix"], x["gateway"]): x for x in wgmesh("routes", "--json").json()["routes"]}
    assert listed[LAN, "gw-euw1"]["alias"] == "10.201.0.0/16"
    assert "10.201.0.0/16" in peers_by_name(netmap(coordinator, sites["vm"]))["gw-euw1"]["allowed_ips"]
    narrow = wgmesh("routes", env=cli_env | {"COLUMNS": "30"})
    assert f"{LAN} as 10.201.0.0/16" in " ".join(narrow.out.split())  # wrapped, never cut
    cleared = wgmesh("routes", "alias", LAN, "--node", "gw-euw1", "--clear", "--json").json()
    assert (cleared["state"], cleared["alias"]) == ("conflict", None)


def test_the_alias_pool_is_set_shown_and_removed(wgmesh: Cli, sites: dict[str, Enrolled]) -> None:
    r = wgmesh("network", "set", "--alias-pool", "10.200.0.0/13")
    assert r.code == 0, r.err
    assert "alias pool 10.200.0.0/13" in r.out
    assert "alias pool    10.200.0.0/13" in wgmesh("network").out
    listed = {(x["prefix"], x["gateway"]): x for x in wgmesh("routes", "--json").json()["routes"]}
    assert (listed[LAN, "gw-euw1"]["state"], listed[LAN, "gw-euw1"]["alias"]) == ("active", "10.200.0.0/16")
    assert wgmesh("network", "set", "--alias-pool", "none", "--json").json()["alias_pool"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("routes", "alias", LAN, "--node", "gw-euw1", "--as", "10.201.0.0/24"), "of its family and length"),
        (("routes", "alias", LAN, "--node", "gw-euw1"), "--as"),
        (
            ("routes", "alias", LAN, "--node", "gw-euw1", "--as", "10.201.0.1/16"),
            "did you mean 10.201.0.0/16",
        ),
        (
            ("routes", "alias", "10.9.0.0/16", "--node", "gw-euw1", "--as", "10.201.0.0/16"),
            "does not advertise",
        ),
        (("network", "set", "--alias-pool", "127.0.0.0/8"), "alias pool"),
        (("network", "set", "--alias-pool", "10.200.0.0/33"), "10.200.0.0/33"),
    ],
)
def test_bad_input_is_one_line(
    wgmesh: Cli, sites: dict[str, Enrolled], argv: tuple[str, ...], message: str
) -> None:
    r = wgmesh(*argv)
    assert r.code != 0 and r.out == "", r  # 2 for what the CLI or the coordinator refuses, 1 for not found
    assert message in r.err and len(r.err.strip().splitlines()) == 1, r.err
