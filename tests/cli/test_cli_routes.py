"""`wgmesh routes [list|approve|reject]`, `wgmesh tokens create --allow-subnet`, `wgmesh network set
--auto-approve` and the pending warnings of `wgmesh status` (issue 16), against a real coordinator."""

from __future__ import annotations

import httpx
import pytest
from cli_harness import Cli
from coordinator_harness import Coordinator, Enrolled, enroll, netmap, peers_by_name

PUBLIC = "203.0.113.10/32"


@pytest.fixture(scope="module")
def gateways(wgmesh: Cli, coordinator: Coordinator, admin: httpx.Client) -> dict[str, Enrolled]:
    """gw-a enrolled with a token allowing its LAN; it also advertises a public /32."""
    r = wgmesh(
        "tokens", "create", "--reusable", "--allow-subnet", "10.1.0.0/16", "--allow-subnet", "fd00:1::/48"
    )
    assert r.code == 0, r.err
    assert "allows 10.1.0.0/16, fd00:1::/48" in r.err
    token = r.out.strip()
    with coordinator.anonymous() as anon:
        a = enroll(anon, token, "gw-a", subnets=["10.1.0.0/16", PUBLIC])
        b = enroll(anon, token, "gw-b")
    return {"gw-a": a, "gw-b": b}


def test_tokens_list_shows_what_each_token_allows(wgmesh: Cli, gateways: dict[str, Enrolled]) -> None:
    r = wgmesh("tokens", "list")
    assert r.code == 0, r.err
    assert "ALLOWS" in r.out and "10.1.0.0/16" in r.out
    listed = wgmesh("tokens", "--json").json()["tokens"]
    assert ["10.1.0.0/16", "fd00:1::/48"] in [t["allow_subnets"] for t in listed]


def test_a_pending_route_is_listed_and_warned_about(
    wgmesh: Cli, cli_env: dict[str, str], gateways: dict[str, Enrolled]
) -> None:
    wide = cli_env | {"COLUMNS": "200"}
    routes = {r["prefix"]: r for r in wgmesh("routes", "--json").json()["routes"]}
    assert (routes["10.1.0.0/16"]["state"], routes["10.1.0.0/16"]["decided_by"]) == ("active", "token")
    assert (routes[PUBLIC]["state"], routes[PUBLIC]["decided_by"]) == ("pending", None)
    table = wgmesh("routes", env=wide)
    assert table.code == 0, table.err
    line = next(ln for ln in table.out.splitlines() if PUBLIC in ln)
    assert "pending" in line and "outside private, CGNAT and ULA space" in line
    assert "approved by token" in next(ln for ln in table.out.splitlines() if "10.1.0.0/16" in ln)
    status = wgmesh("status", env=wide)
    assert status.code == 0, status.err
    warning = next(ln for ln in status.out.splitlines() if ln.startswith("!") and PUBLIC in ln)
    assert "pending approval" in warning
    assert f"wgmesh routes approve {PUBLIC} --node gw-a" in warning


def test_approve_and_reject_from_the_command_line(
    wgmesh: Cli, coordinator: Coordinator, gateways: dict[str, Enrolled]
) -> None:
    r = wgmesh("routes", "approve", PUBLIC, "--node", "gw-a", "--reason", "the [bold]relay[/bold]")
    assert r.code == 0, r.err
    assert (
        f"{PUBLIC} at gw-a: active" in r.out and "[bold]relay[/bold]" not in r.out
    )  # escaped, shown as text
    assert PUBLIC in peers_by_name(netmap(coordinator, gateways["gw-b"]))["gw-a"]["allowed_ips"]
    doc = wgmesh("routes", "reject", PUBLIC, "--node", "gw-a", "--reason", "changed my mind", "--json").json()
    assert (doc["state"], doc["reason"], doc["decided_by"]) == ("rejected", "changed my mind", "env")
    assert PUBLIC not in peers_by_name(netmap(coordinator, gateways["gw-b"]))["gw-a"]["allowed_ips"]
    entries = wgmesh("audit", "--json").json()["entries"]
    assert [e["action"] for e in entries if e["action"].startswith("route.")][-2:] == [
        "route.approve",
        "route.reject",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("routes", "approve", "10.1.0.1/16", "--node", "gw-a"), "did you mean 10.1.0.0/16"),
        (("routes", "approve", "10.1.0.0/16"), "--node"),
        (("routes", "reject", "10.9.0.0/16", "--node", "gw-a"), "does not advertise 10.9.0.0/16"),
        (("routes", "approve", "10.1.0.0/16", "--node", "gw-zz"), "no node named"),
        (("tokens", "create", "--allow-subnet", "10.0.0.0/33"), "10.0.0.0/33"),
    ],
)
def test_bad_input_is_one_line(
    wgmesh: Cli, gateways: dict[str, Enrolled], argv: tuple[str, ...], message: str
) -> None:
    r = wgmesh(*argv)
    assert r.code != 0 and r.out == ""
    assert message in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_network_auto_approve_is_set_shown_and_cleared(
    wgmesh: Cli, coordinator: Coordinator, admin: httpx.Client, gateways: dict[str, Enrolled]
) -> None:
    with coordinator.node(gateways["gw-b"].credential) as node:
        assert node.put("/api/v1/node/subnets", json={"subnets": ["10.2.0.0/16"]}).status_code == 200
    before = {(x["prefix"], x["gateway"]): x for x in admin.get("/api/v1/routes").json()["routes"]}
    assert before["10.2.0.0/16", "gw-b"]["state"] == "pending"
    r = wgmesh("network", "set", "--auto-approve", "10.2.0.0/16,192.168.0.0/16")
    assert r.code == 0, r.err
    assert "auto-approve 10.2.0.0/16, 192.168.0.0/16" in r.out
    assert "10.2.0.0/16, 192.168.0.0/16" in wgmesh("network", "show").out
    routes = {(x["prefix"], x["gateway"]): x for x in wgmesh("routes", "--json").json()["routes"]}
    assert (routes["10.2.0.0/16", "gw-b"]["state"], routes["10.2.0.0/16", "gw-b"]["decided_by"]) == (
        "active",
        "network",
    )
    assert wgmesh("network", "set", "--auto-approve", "none", "--json").json()["auto_approve"] == []
    assert "auto-approve  none" in wgmesh("network").out
