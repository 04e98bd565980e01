"""`wgmesh status`, `wgmesh status NODE` and `wgmesh routes` against a real coordinator with enrolled
nodes and status reports: the --json contract field by field, and the tables."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cli_harness import NODE_FIELDS, PEER_FIELDS, ROUTE_FIELDS, Cli
from coordinator_harness import Coordinator, Enrolled, create_token, enroll, post_status


@dataclass
class Mesh:
    a: Enrolled
    b: Enrolled
    c: Enrolled
    dev: dict[str, Any]
    handshake: datetime
    started: datetime

    def overlay(self, name: str) -> str:
        if name == "dev":
            return str(self.dev["overlay_ip"])
        node = {"gw-a": self.a, "gw-b": self.b, "gw-c": self.c}[name]
        return str(node.first_netmap["overlay_ip"])


@pytest.fixture(scope="module")
def enrolled(
    coordinator: Coordinator, admin: httpx.Client
) -> tuple[Enrolled, Enrolled, Enrolled, dict[str, Any]]:
    """Three gateways and a static peer, enrolled once for the module."""
    token = create_token(admin, reusable=True, allow_subnets=["10.0.0.0/8"])["token"]
    with coordinator.anonymous() as anon:
        a = enroll(anon, token, "gw-a", subnets=["10.1.0.0/16"], endpoints=["198.51.100.1:51820"])
        b = enroll(anon, token, "gw-b", subnets=["10.2.0.0/16", "10.1.5.0/24"], site="vpc2")
        c = enroll(anon, token, "gw-c", subnets=["10.2.0.0/16"], site="vpc2")
    # gw-c joins gw-b's prefix on their site: an HA claim, which an admin approves (issue 16, 18)
    r = admin.post("/api/v1/nodes/gw-c/routes/approve", json={"prefix": "10.2.0.0/16"})
    assert r.status_code == 200, r.text
    r = admin.post("/api/v1/nodes", json={"name": "dev", "generate_keys": True})
    assert r.status_code == 201, r.text
    return a, b, c, r.json()


@pytest.fixture
def mesh(coordinator: Coordinator, enrolled: tuple[Enrolled, Enrolled, Enrolled, dict[str, Any]]) -> Mesh:
    """gw-a and gw-b report just before each test: what the tests read of "online" and of ages must not
    depend on how long the earlier tests of the module took on this machine (gw-c never reports)."""
    a, b, c, dev = enrolled
    started = datetime.now(UTC)
    handshake = (datetime.now(UTC) - timedelta(seconds=12)).replace(microsecond=0)
    post_status(
        coordinator,
        a,
        {
            "eth0_ip": "10.1.0.5",
            "endpoints": ["198.51.100.1:51820"],
            "mtu": 1380,
            "max_mtu": 1380,
            "agent_version": "0.2.0",
            "peers": [
                {
                    "public_key": b.keypair.public_key,
                    "rx_bytes": 123456,
                    "tx_bytes": 7890,
                    "last_handshake": handshake.isoformat(),
                    "endpoint": "198.51.100.2:51820",
                    "path": "direct",
                    "rtt_ms": 1.5,
                    "health": "up",
                },
                {
                    "public_key": c.keypair.public_key,
                    "rx_bytes": 10,
                    "tx_bytes": 20,
                    "last_handshake": handshake.isoformat(),
                    "path": "relay",
                    "relay": "relay-1",
                    "rtt_ms": 14.25,
                    "reason": "no UDP handshake within 5 s",
                    "health": "down",
                },
                {"public_key": dev["public_key"], "rx_bytes": 300, "tx_bytes": 400, "path": "direct"},
            ],
            "shadowed": [
                {
                    "prefix": "10.2.0.0/16",
                    "gateway": "gw-b",
                    "interface": "lan",
                    "local_prefix": "10.2.0.0/24",
                }
            ],
            "ha": [
                {
                    "prefix": "10.2.0.0/16",
                    "holder": "gw-b",
                    "code": "returning",
                    "reason": "gw-b healthy for 30 s",
                    "changed_at": (handshake + timedelta(seconds=2)).isoformat(),
                    "moved_from": "gw-c",
                }
            ],
        },
    )
    post_status(
        coordinator,
        b,
        {
            "eth0_ip": "10.2.0.5",
            "peers": [
                {
                    "public_key": a.keypair.public_key,
                    "rx_bytes": 7890,
                    "tx_bytes": 123456,
                    "last_handshake": handshake.isoformat(),
                    "endpoint": "198.51.100.1:51820",
                    "path": "direct",
                    "rtt_ms": 1.6,
                }
            ],
        },
    )
    return Mesh(a, b, c, dev, handshake, started)


def when(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)  # ISO 8601
    assert parsed.tzinfo is not None, value
    return parsed


def test_status_json_contract_field_by_field(wgmesh: Cli, mesh: Mesh) -> None:
    doc = wgmesh("status", "--json").json()
    assert set(doc) == {"nodes", "routes", "warnings", "ha_groups"}
    assert [n["name"] for n in doc["nodes"]] == ["dev", "gw-a", "gw-b", "gw-c"]
    nodes = {n["name"]: n for n in doc["nodes"]}
    for n in doc["nodes"]:
        assert set(n) == NODE_FIELDS, n
        assert n["overlay_ip"] == mesh.overlay(n["name"])
        assert [p["name"] for p in n["peers"]] == sorted(set(nodes) - {n["name"]})
        for p in n["peers"]:
            assert set(p) == PEER_FIELDS, p
            assert p["overlay_ip"] == mesh.overlay(p["name"])

    a = nodes["gw-a"]
    assert (a["eth0_ip"], a["public_ip"], a["online"], a["p2p"]) == ("10.1.0.5", "127.0.0.1", True, "auto")
    assert a["mtu"] == 1380  # what its agent set, from its report
    assert nodes["gw-b"]["mtu"] is None  # reported, but without an MTU (an agent before MTUs)
    assert a["agent_version"] == "0.2.0"  # the version its agent runs, from its report
    assert nodes["gw-b"]["agent_version"] is None  # reported, but without a version (an agent of 0.1.0)
    assert a["subnets"] == ["10.1.0.0/16"]
    assert mesh.started - timedelta(seconds=1) <= when(a["last_seen"]) <= datetime.now(UTC)
    peers = {p["name"]: p for p in a["peers"]}
    assert peers["gw-b"] == {
        "name": "gw-b",
        "overlay_ip": mesh.overlay("gw-b"),
        "eth0_ip": "10.2.0.5",
        "public_ip": "127.0.0.1",
        "path": "direct",
        "endpoint": "198.51.100.2:51820",
        "relay": None,
        "rtt_ms": 1.5,
        "rx_bytes": 123456,
        "tx_bytes": 7890,
        "last_handshake": peers["gw-b"]["last_handshake"],
        "reason": None,
        "health": "up",  # gw-a's probes' verdict
    }
    assert when(peers["gw-b"]["last_handshake"]) == mesh.handshake
    relayed = peers["gw-c"]
    assert (relayed["path"], relayed["relay"], relayed["endpoint"]) == ("relay", "relay-1", None)
    assert (relayed["rtt_ms"], relayed["reason"]) == (14.25, "no UDP handshake within 5 s")
    assert (relayed["eth0_ip"], relayed["public_ip"]) == (None, None)  # gw-c never reported

    # gw-c never reported: not online, no last_seen, and its peers are what the others saw of it.
    c = nodes["gw-c"]
    assert (c["online"], c["last_seen"], c["eth0_ip"], c["public_ip"], c["mtu"]) == (
        False,
        None,
        None,
        None,
        None,
    )
    seen_by_a = {p["name"]: p for p in c["peers"]}["gw-a"]
    assert (seen_by_a["path"], seen_by_a["rx_bytes"], seen_by_a["tx_bytes"]) == ("relay", 20, 10)
    # The static peer, seen through gw-a's report (no handshake there: null, not a made-up time).
    dev_a = {p["name"]: p for p in nodes["dev"]["peers"]}["gw-a"]
    assert (dev_a["path"], dev_a["rx_bytes"], dev_a["tx_bytes"], dev_a["last_handshake"]) == (
        "direct",
        400,
        300,
        None,
    )
    dev_b = {p["name"]: p for p in nodes["dev"]["peers"]}["gw-b"]
    assert (dev_b["path"], dev_b["rx_bytes"], dev_b["rtt_ms"]) == (None, None, None)

    routes = {(r["prefix"], r["gateway"]): r for r in doc["routes"]}
    for r in doc["routes"]:
        assert set(r) == ROUTE_FIELDS
    assert [r["prefix"] for r in doc["routes"]] == [
        "10.1.0.0/16",
        "10.1.5.0/24",
        "10.2.0.0/16",
        "10.2.0.0/16",
    ]
    assert routes[("10.1.0.0/16", "gw-a")] == {
        "prefix": "10.1.0.0/16",
        "gateway": "gw-a",
        "state": "active",
        "reason": "",
        "conflicts_with": None,
        "decided_by": "token",  # its enrollment token allows 10/8 (issue 16)
        "alias": None,  # reached at itself (issue 20)
    }
    assert routes[("10.2.0.0/16", "gw-c")]["decided_by"] == "env"  # the HA claim an admin approved
    conflict = routes[("10.1.5.0/24", "gw-b")]
    assert (conflict["state"], conflict["conflicts_with"]) == ("conflict", "10.1.0.0/16@gw-a")
    assert "overlaps 10.1.0.0/16@gw-a" in conflict["reason"]
    shadowed = routes[("10.2.0.0/16", "gw-b")]
    assert (shadowed["state"], shadowed["conflicts_with"]) == ("shadowed", "10.2.0.0/24@gw-a")
    standby = routes[("10.2.0.0/16", "gw-c")]
    assert (standby["state"], standby["conflicts_with"]) == ("standby", "10.2.0.0/16@gw-b")

    warnings = doc["warnings"]
    assert all(isinstance(w, str) for w in warnings)
    assert any("10.1.5.0/24@gw-b" in w for w in warnings)
    assert any("gw-a does not install 10.2.0.0/16" in w for w in warnings)
    assert "gateway gw-c is offline" in warnings

    assert (nodes["gw-b"]["site"], nodes["gw-c"]["site"], nodes["gw-a"]["site"]) == ("vpc2", "vpc2", "gw-a")
    (group,) = doc["ha_groups"]
    assert (group["prefix"], group["site"]) == ("10.2.0.0/16", "vpc2")
    assert [(m["node"], m["role"], m["online"], m["carried_by"]) for m in group["members"]] == [
        ("gw-b", "primary", True, ["gw-a"]),
        ("gw-c", "standby", False, []),
    ]
    assert [m["health"] for m in group["members"]] == [
        {"up": 1, "down": 0, "unknown": 0},
        {"up": 0, "down": 1, "unknown": 0},
    ]
    move = group["last_failover"]
    assert (move["reported_by"], move["moved_from"], move["holder"], move["code"], move["reason"]) == (
        "gw-a",
        "gw-c",
        "gw-b",
        "returning",
        "gw-b healthy for 30 s",
    )
    assert when(move["at"]) == mesh.handshake + timedelta(seconds=2)


def test_status_node_json_is_that_nodes_entry(wgmesh: Cli, mesh: Mesh) -> None:
    whole = {n["name"]: n for n in wgmesh("status", "--json").json()["nodes"]}
    one = wgmesh("status", "gw-a", "--json").json()
    assert set(one) == NODE_FIELDS
    assert one == whole["gw-a"]
    by_id = wgmesh("status", str(mesh.b.node_id), "--json").json()
    assert by_id["name"] == "gw-b"


def test_status_table_lists_nodes_routes_and_warnings(wgmesh: Cli, mesh: Mesh) -> None:
    r = wgmesh("status")
    assert r.code == 0, r.err
    assert r.err == ""
    for name in ("gw-a", "gw-b", "gw-c", "dev"):
        assert name in r.out and mesh.overlay(name) in r.out
    for text in ("10.1.0.5", "127.0.0.1", "Routes", "Warnings", "conflict", "standby", "shadowed", "static"):
        assert text in r.out, text
    assert r.out.index("Nodes") < r.out.index("Routes") < r.out.index("HA groups") < r.out.index("Warnings")
    ha = r.out[r.out.index("HA groups") : r.out.index("Warnings")]
    for text in ("10.2.0.0/16", "vpc2", "gw-b up 1/1", "gw-c up 0/1 offline", "gw-c → gw-b", "returning"):
        assert text in ha, (text, ha)
    assert "gateway gw-c is offline" in r.out


@pytest.mark.parametrize("columns", ["80", "120"])
def test_status_node_table_shows_each_peer_path(
    wgmesh: Cli, mesh: Mesh, cli_env: dict[str, str], columns: str
) -> None:
    r = wgmesh("status", "gw-a", env=cli_env | {"COLUMNS": columns})
    assert r.code == 0, r.err
    assert all(len(line) <= int(columns) for line in r.out.splitlines())
    assert "mtu 1380" in r.out
    for text in (
        "gw-b",
        "gw-c",
        "dev",
        "198.51.100.2:51820",
        "relay-1",
        "1.50 ms",
        "14 ms",
        "120.6 KiB",
        "7.7 KiB",
    ):
        assert text in r.out, (text, r.out)
    ages = [int(x) for x in re.findall(r"(\d+)s ago", r.out)]
    assert ages and all(12 <= x < 60 for x in ages), ages  # the handshake 12 s before the report
    assert "—" in r.out  # dev's unknown handshake


def test_status_of_an_unknown_node_fails_with_one_line(wgmesh: Cli, mesh: Mesh) -> None:
    r = wgmesh("status", "nope")
    assert r.code == 1
    assert r.one_line_error() == "wgmesh: no node named 'nope'"
    assert r.out == ""


def test_routes_json_is_the_status_route_list(wgmesh: Cli, mesh: Mesh) -> None:
    routes = wgmesh("routes", "--json").json()
    assert set(routes) == {"routes", "ha_groups"}
    status = wgmesh("status", "--json").json()
    assert routes["routes"] == status["routes"]
    assert routes["ha_groups"] == status["ha_groups"]


def test_routes_table_groups_by_gateway_on_80_columns(
    wgmesh: Cli, mesh: Mesh, cli_env: dict[str, str]
) -> None:
    r = wgmesh("routes", env=cli_env | {"COLUMNS": "80"})
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    heads = {
        gw: next(i for i, line in enumerate(lines) if line.startswith(f"{gw}  "))
        for gw in ("gw-a", "gw-b", "gw-c")
    }
    assert heads["gw-a"] < heads["gw-b"] < heads["gw-c"]
    assert "online" in lines[heads["gw-a"]] and "never seen" in lines[heads["gw-c"]]
    conflict = next(i for i, line in enumerate(lines) if " 10.1.5.0/24 " in line)
    assert heads["gw-b"] < conflict < heads["gw-c"]
    assert "conflict" in lines[conflict] and "10.1.0.0/16@gw-a" in lines[conflict]
    # then the HA groups: the primary and the standbys, who carries the prefix to whom, the last move;
    # on 80 columns a group's lines (the table would fold the move into a sliver), a table when wide
    ha = lines.index("HA groups")
    assert heads["gw-c"] < ha
    group = "\n".join(lines[ha:])
    for text in ("10.2.0.0/16  site vpc2", "  primary gw-b up 1/1 ← gw-a", "  standby gw-c up 0/1 offline"):
        assert text in group, (text, group)
    wide = wgmesh("routes", env=cli_env | {"COLUMNS": "200"}).out.splitlines()
    header = next(line for line in wide[wide.index("HA groups") :] if "PREFIX" in line)
    assert header.split() == ["PREFIX", "SITE", "PRIMARY", "STANDBYS", "CARRIED-BY", "LAST", "FAILOVER"]
    row = next(line for line in wide[wide.index("HA groups") :] if line.startswith("10.2.0.0/16"))
    for text in (
        "vpc2",
        "gw-b up 1/1",
        "gw-c up 0/1 offline",
        "gw-b ← gw-a",
        "gw-a: gw-c → gw-b (returning:",
    ):
        assert text in row, (text, row)


def test_status_warns_of_each_route_an_agent_refused(
    wgmesh: Cli, coordinator: Coordinator, mesh: Mesh, cli_env: dict[str, str]
) -> None:
    refused = [
        {"prefix": "198.18.0.1/32", "gateway": "gw-a", "code": "coordinator", "address": "198.18.0.1"},
        {"prefix": "0.0.0.0/1", "gateway": "gw-a", "code": "too_wide"},
    ]
    post_status(coordinator, mesh.b, {"eth0_ip": "10.2.0.5", "refused": refused})
    try:
        warnings = wgmesh("status", "--json").json()["warnings"]
        assert (
            "gw-b refused route 198.18.0.1/32@gw-a: covers the coordinator's address 198.18.0.1" in warnings
        )
        assert any(w.startswith("gw-b refused route 0.0.0.0/1@gw-a: wider than") for w in warnings)
        r = wgmesh("status", env=cli_env | {"COLUMNS": "200"})
        assert "gw-b refused route 198.18.0.1/32@gw-a" in r.out
    finally:
        post_status(coordinator, mesh.b, {"eth0_ip": "10.2.0.5"})


def test_status_shows_each_agents_version_and_warns_of_one_older_than_supported(
    wgmesh: Cli, coordinator: Coordinator, mesh: Mesh, cli_env: dict[str, str]
) -> None:
    post_status(coordinator, mesh.b, {"eth0_ip": "10.2.0.5", "agent_version": "0.0.9"})
    warning = (
        "gw-b runs agent 0.0.9, older than 0.1.0, the oldest this coordinator supports: upgrade its agent"
    )
    doc = wgmesh("status", "--json").json()
    assert {n["name"]: n["agent_version"] for n in doc["nodes"]} == {
        "dev": None,
        "gw-a": "0.2.0",
        "gw-b": "0.0.9",
        "gw-c": None,
    }
    assert warning in doc["warnings"]
    r = wgmesh("status", env=cli_env | {"COLUMNS": "200"})
    assert r.code == 0, r.err
    # newest first; gw-c never reported; dev is a static peer, it runs no agent
    assert "agents run 0.2.0 (gw-a); 0.0.9 (gw-b); unknown (gw-c)" in r.out
    assert warning in r.out
    assert "agent 0.2.0" in wgmesh("status", "gw-a").out.splitlines()[0]
    assert wgmesh("status", "gw-b", "--json").json()["agent_version"] == "0.0.9"
    shown = wgmesh("nodes", "show", "gw-a", env=cli_env | {"COLUMNS": "200"})
    assert re.search(r"^agent version +0\.2\.0 *$", shown.out, re.MULTILINE), shown.out
    never = wgmesh("nodes", "show", "gw-c", env=cli_env | {"COLUMNS": "200"})
    assert re.search(r"^agent version +unknown \(not reported\) *$", never.out, re.MULTILINE), never.out
    assert "agent version" not in wgmesh("nodes", "show", "dev").out  # a static peer
    assert (
        "agent_version" not in wgmesh("nodes", "show", "gw-a", "--json").json()
    )  # the API's node, as before


def test_nodes_list_shows_a_site_column_once_a_node_names_a_site(
    wgmesh: Cli, mesh: Mesh, cli_env: dict[str, str]
) -> None:
    r = wgmesh("nodes", env=cli_env | {"COLUMNS": "160"})
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert "SITE" in lines[0]
    assert "vpc2" in next(line for line in lines if line.startswith("gw-c"))
    shown = wgmesh("nodes", "show", "gw-a")
    assert "gw-a (its own)" in shown.out
    assert {n["name"]: n["site"] for n in wgmesh("nodes", "--json").json()["nodes"]}["gw-b"] == "vpc2"
