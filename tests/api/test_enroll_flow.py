"""The whole API flow on one coordinator: init, token, enroll, netmaps, routes, delete.

The tests run in order and build on each other, as an operator's session would.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from coordinator_harness import (
    Api,
    Enrolled,
    assert_error,
    coordinator_command,
    create_token,
    enroll,
    netmap,
    peers_by_name,
    running,
    version,
)
from inprocess_harness import InProcessCoordinator

from wgmesh import keys

BACKENDS = ("sqlite", "postgresql")
"""Run on both databases, through the same code (tests/api/conftest.py)."""

OVERLAY = ipaddress.ip_network("100.96.0.0/16")


def init(db: Path | str) -> str:
    out = subprocess.run(
        coordinator_command(db, "init"), capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory, database: str | None) -> Iterator[dict[str, Any]]:
    """A coordinator on a database made by `wgmesh-coordinator init`, using the token init printed."""
    tmp = tmp_path_factory.mktemp("flow")
    printed = init(database or tmp / "c.db")
    match = re.search(r"admin token \(shown once, store it safely\): (\S+)", printed)
    assert match, printed
    c = InProcessCoordinator(db=tmp / "c.db", log=tmp / "c.log", admin_token=None, database=database)
    with (
        running(c),
        c.admin(match[1]) as admin,
    ):
        yield {"coordinator": c, "admin": admin, "nodes": {}}


def nm(flow: dict[str, Any], name: str) -> dict[str, Any]:
    node: Enrolled = flow["nodes"][name]
    return netmap(flow["coordinator"], node)


def routes(admin: httpx.Client) -> dict[tuple[str, str], dict[str, Any]]:
    r = admin.get("/api/v1/routes")
    assert r.status_code == 200, r.text
    return {(x["prefix"], x["gateway"]): x for x in r.json()["routes"]}


def test_the_printed_admin_token_works_and_only_it(flow: dict[str, Any]) -> None:
    c: Api = flow["coordinator"]
    assert flow["admin"].get("/api/v1/nodes").json() == {"nodes": []}
    with c.admin("wga_not-the-printed-token-at-all") as wrong:
        assert_error(wrong.get("/api/v1/nodes"), 401)


def test_three_nodes_enroll_with_their_own_keys(flow: dict[str, Any]) -> None:
    c: Api = flow["coordinator"]
    # Its nodes' own subnets inside 10/8 are approved by the token (issue 16: none would be, otherwise).
    token = create_token(
        flow["admin"], reusable=True, expires_in=600, tags=["lab"], allow_subnets=["10.0.0.0/8"]
    )
    assert token["token"].startswith("wgt_")
    with c.anonymous() as anon:
        for i, name in enumerate(("gw-a", "gw-b", "gw-c"), start=1):
            earlier = sorted(flow["nodes"])
            before = version(anon)
            # gw-a and gw-c serve one site (an identical prefix makes them an HA group); gw-b its own.
            site = None if name == "gw-b" else "vpc1"
            node = enroll(anon, token["token"], name, endpoints=[f"198.51.100.{i}:51820"], site=site)
            assert node.first_netmap["version"] == version(anon) > before  # a join is a change
            flow["nodes"][name] = node
            assert node.credential.startswith("wgn_")
            assert node.first_netmap["name"] == name
            assert node.first_netmap["node_id"] == node.node_id
            # The first netmap already lists the nodes that enrolled before.
            assert sorted(p["name"] for p in node.first_netmap["peers"]) == earlier
    listed = flow["admin"].get("/api/v1/nodes").json()["nodes"]
    assert [n["name"] for n in listed] == ["gw-a", "gw-b", "gw-c"]
    for n in listed:
        assert n["public_key"] == flow["nodes"][n["name"]].keypair.public_key
        assert n["tags"] == ["lab"]
        assert n["site"] == ("gw-b" if n["name"] == "gw-b" else "vpc1")  # no site: its own, by name
        assert ipaddress.ip_address(n["overlay_ip"]) in OVERLAY
    assert len({n["overlay_ip"] for n in listed}) == 3
    tokens = flow["admin"].get("/api/v1/tokens").json()["tokens"]
    assert [t["uses"] for t in tokens if t["id"] == token["id"]] == [3]
    assert "token" not in tokens[0]  # the secret is shown once only


def test_netmaps_list_each_other_with_overlay_host_routes(flow: dict[str, Any]) -> None:
    nodes: dict[str, Enrolled] = flow["nodes"]
    listed = {n["name"]: n for n in flow["admin"].get("/api/v1/nodes").json()["nodes"]}
    psk: dict[frozenset[str], str] = {}
    for name in nodes:
        m = nm(flow, name)
        assert m["overlay_ip"] == listed[name]["overlay_ip"]
        peers = peers_by_name(m)
        assert sorted(peers) == sorted(set(nodes) - {name})
        for other, p in peers.items():
            assert p["public_key"] == nodes[other].keypair.public_key
            assert p["overlay_ip"] == listed[other]["overlay_ip"]
            assert p["allowed_ips"] == [f"{listed[other]['overlay_ip']}/32"]
            assert p["endpoints"][0] == listed[other]["endpoints"][0]
            assert p["p2p"] == "auto"
            assert len(keys.decode_key(p["psk"])) == 32
            psk.setdefault(frozenset((name, other)), p["psk"])
            assert psk[frozenset((name, other))] == p["psk"]  # same from both ends
    assert len(set(psk.values())) == 3  # and different for every pair


def test_advertising_a_subnet_raises_the_others_versions_and_reaches_their_netmaps(
    flow: dict[str, Any],
) -> None:
    admin: httpx.Client = flow["admin"]
    before = {name: nm(flow, name)["version"] for name in flow["nodes"]}
    r = admin.patch("/api/v1/nodes/gw-a", json={"subnets": ["10.1.0.0/16"]})
    assert r.status_code == 200, r.text
    assert r.json()["subnets"] == ["10.1.0.0/16"]
    for name in ("gw-b", "gw-c"):
        m = nm(flow, name)
        assert m["version"] > before[name]
        assert peers_by_name(m)["gw-a"]["allowed_ips"][1:] == ["10.1.0.0/16"]
    own = nm(flow, "gw-a")
    assert [(x["prefix"], x["state"]) for x in own["routes"]] == [("10.1.0.0/16", "active")]
    assert routes(admin)[("10.1.0.0/16", "gw-a")]["state"] == "active"


def test_an_identical_subnet_stands_by(flow: dict[str, Any]) -> None:
    admin: httpx.Client = flow["admin"]
    r = admin.patch("/api/v1/nodes/gw-c", json={"subnets": ["10.1.0.0/16"]})
    assert r.status_code == 200, r.text
    standby = routes(admin)[("10.1.0.0/16", "gw-c")]
    assert standby["state"] == "standby"
    assert standby["conflicting_with"] == "10.1.0.0/16@gw-a"
    assert peers_by_name(nm(flow, "gw-a"))["gw-c"]["allowed_ips"][1:] == []
    assert peers_by_name(nm(flow, "gw-b"))["gw-a"]["allowed_ips"][1:] == ["10.1.0.0/16"]
    assert peers_by_name(nm(flow, "gw-b"))["gw-c"]["allowed_ips"][1:] == []
    assert [(x["prefix"], x["state"]) for x in nm(flow, "gw-c")["routes"]] == [("10.1.0.0/16", "standby")]


def test_an_overlapping_subnet_is_a_conflict_naming_the_route_it_collides_with(flow: dict[str, Any]) -> None:
    admin: httpx.Client = flow["admin"]
    r = admin.patch("/api/v1/nodes/gw-b", json={"subnets": ["10.1.2.0/24", "10.2.0.0/16"]})
    assert r.status_code == 200, r.text
    got = routes(admin)
    conflict = got[("10.1.2.0/24", "gw-b")]
    assert conflict["state"] == "conflict"
    assert conflict["conflicting_with"] == "10.1.0.0/16@gw-a"
    assert "10.1.0.0/16@gw-a" in conflict["reason"]
    assert got[("10.2.0.0/16", "gw-b")]["state"] == "active"
    assert got[("10.1.0.0/16", "gw-a")]["state"] == "active"
    assert got[("10.1.0.0/16", "gw-c")]["state"] == "standby"
    for name in ("gw-a", "gw-c"):
        assert peers_by_name(nm(flow, name))["gw-b"]["allowed_ips"][1:] == ["10.2.0.0/16"]
    topology = admin.get("/api/v1/topology").json()
    assert any("10.1.2.0/24@gw-b" in w and "10.1.0.0/16@gw-a" in w for w in topology["warnings"])


def test_pair_and_node_p2p_policies_reach_the_netmaps(flow: dict[str, Any]) -> None:
    admin: httpx.Client = flow["admin"]
    r = admin.put("/api/v1/pairs/gw-b/gw-c", json={"p2p": "off"})
    assert r.status_code == 200, r.text
    assert admin.get("/api/v1/pairs").json() == {
        "pairs": [{"a": "gw-b", "b": "gw-c", "p2p": "off", "rate": None}]
    }
    assert peers_by_name(nm(flow, "gw-b"))["gw-c"]["p2p"] == "off"
    assert peers_by_name(nm(flow, "gw-c"))["gw-b"]["p2p"] == "off"
    assert peers_by_name(nm(flow, "gw-b"))["gw-a"]["p2p"] == "auto"
    assert admin.put("/api/v1/pairs/gw-c/gw-b", json={"p2p": None}).status_code == 204
    assert admin.get("/api/v1/pairs").json() == {"pairs": []}
    assert peers_by_name(nm(flow, "gw-b"))["gw-c"]["p2p"] == "auto"

    assert admin.patch("/api/v1/nodes/gw-a", json={"p2p": "off"}).status_code == 200
    assert nm(flow, "gw-a")["p2p"] == "off"
    assert {p["p2p"] for p in nm(flow, "gw-a")["peers"]} == {"off"}
    assert peers_by_name(nm(flow, "gw-b"))["gw-a"]["p2p"] == "off"
    assert peers_by_name(nm(flow, "gw-b"))["gw-c"]["p2p"] == "auto"


def test_a_node_replaces_its_own_subnets_and_hears_the_verdicts(flow: dict[str, Any]) -> None:
    c: Api = flow["coordinator"]
    with c.node(flow["nodes"]["gw-c"].credential) as node_c:
        r = node_c.put(
            "/api/v1/node/subnets", json={"subnets": ["10.3.0.0/16", "10.1.0.0/16"], "site": "vpc1"}
        )
    assert r.status_code == 200, r.text
    # 10.1.0.0/16 keeps its place behind gw-a's: still standby.
    assert {(x["prefix"], x["state"]) for x in r.json()["routes"]} == {
        ("10.3.0.0/16", "active"),
        ("10.1.0.0/16", "standby"),
    }
    assert peers_by_name(nm(flow, "gw-a"))["gw-c"]["allowed_ips"][1:] == ["10.3.0.0/16"]


def test_a_deleted_node_disappears_from_the_others(flow: dict[str, Any]) -> None:
    admin: httpx.Client = flow["admin"]
    c: Api = flow["coordinator"]
    before = {name: nm(flow, name)["version"] for name in ("gw-b", "gw-c")}
    r = admin.delete("/api/v1/nodes/gw-a")
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "gw-a"
    for name in ("gw-b", "gw-c"):
        m = nm(flow, name)
        assert m["version"] > before[name]
        assert sorted(peers_by_name(m)) == sorted({"gw-b", "gw-c"} - {name})
    assert [n["name"] for n in admin.get("/api/v1/nodes").json()["nodes"]] == ["gw-b", "gw-c"]
    assert all(gw != "gw-a" for _, gw in routes(admin))
    assert_error(admin.get("/api/v1/nodes/gw-a"), 404, "unknown_node")
    with c.node(flow["nodes"]["gw-a"].credential) as gone:
        assert_error(gone.get("/api/v1/netmap"), 401)
    # The standby takes over the prefix, and gw-b's overlapping route now collides with it.
    got = routes(admin)
    assert got[("10.1.0.0/16", "gw-c")]["state"] == "active"
    assert got[("10.1.2.0/24", "gw-b")]["state"] == "conflict"
    assert got[("10.1.2.0/24", "gw-b")]["conflicting_with"] == "10.1.0.0/16@gw-c"
    assert sorted(peers_by_name(nm(flow, "gw-b"))["gw-c"]["allowed_ips"][1:]) == [
        "10.1.0.0/16",
        "10.3.0.0/16",
    ]


def test_a_static_peer_gets_keys_from_the_coordinator(flow: dict[str, Any]) -> None:
    admin: httpx.Client = flow["admin"]
    r = admin.post("/api/v1/nodes", json={"name": "phone", "generate_keys": True})
    assert r.status_code == 201, r.text
    node = r.json()
    assert node["static"] is True
    assert len(keys.decode_key(node["public_key"])) == 32
    assert "private_key" not in node
    assert peers_by_name(nm(flow, "gw-b"))["phone"]["public_key"] == node["public_key"]
