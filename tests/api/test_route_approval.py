"""Route approval (issue 16): a node gets only what it was allowed. Every advertised prefix is pending until a
rule (the enrollment token's `allow_subnets`, the network's `auto_approve`) or an admin approves it; public
space and HA claims need an admin; pending and rejected prefixes are in no netmap. Endpoints a node reports
that no peer should send to are refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from coordinator_harness import (
    Api,
    Enrolled,
    assert_error,
    create_token,
    enroll,
    enroll_body,
    netmap,
    peers_by_name,
    post_status,
    version,
)

BACKENDS = ("sqlite", "postgresql")
"""Run on both databases, through the same code (tests/api/conftest.py)."""

PUBLIC = "203.0.113.10/32"
HALF = "64.0.0.0/3"  # what the issue saw accepted; 0.0.0.0/1 is refused outright (loopback, overlay)
SIXES = "2000::/3"


def routes(admin: httpx.Client) -> dict[tuple[str, str], dict[str, Any]]:
    r = admin.get("/api/v1/routes")
    assert r.status_code == 200, r.text
    return {(x["prefix"], x["gateway"]): x for x in r.json()["routes"]}


def everywhere(coordinator: Api, nodes: dict[str, Enrolled]) -> set[str]:
    """Every prefix in any netmap: peers' allowed IPs and each node's own routes, standby included."""
    found: set[str] = set()
    for node in nodes.values():
        nm = netmap(coordinator, node)
        found |= {ip for p in nm["peers"] for ip in p["allowed_ips"]}
        found |= {r["prefix"] for r in nm["routes"]}
    return found


def _of(coordinator: Api, nodes: dict[str, Enrolled], gateway: str) -> set[str]:
    """What any netmap holds of `gateway`'s prefixes: in the peers' allowed IPs and its own list."""
    found = {r["prefix"] for r in netmap(coordinator, nodes[gateway])["routes"]}
    for name, node in nodes.items():
        if name != gateway:
            found |= set(peers_by_name(netmap(coordinator, node))[gateway]["allowed_ips"])
    return found


def decide(admin: httpx.Client, verdict: str, node: str, prefix: str, reason: str = "") -> httpx.Response:
    return admin.post(f"/api/v1/nodes/{node}/routes/{verdict}", json={"prefix": prefix, "reason": reason})


@pytest.fixture(scope="module")
def mesh(coordinator: Api, admin: httpx.Client) -> dict[str, Enrolled]:
    """gw-a holds 10.1.0.0/16 (its token allows 10.1/16); gw-b's token allows only 10.2/16, and gw-b
    advertises a public /32, half the internet and gw-a's prefix besides its own."""
    token_a = create_token(admin, allow_subnets=["10.1.0.0/16"])["token"]
    token_b = create_token(admin, reusable=True, allow_subnets=["10.2.0.0/16"])["token"]
    with coordinator.anonymous() as anon:
        a = enroll(anon, token_a, "gw-a", subnets=["10.1.0.0/16"], site="vpc1")
        b = enroll(anon, token_b, "gw-b", site="vpc1")  # gw-a's site: 10.1.0.0/16 is an HA claim
        c = enroll(anon, token_b, "gw-c")
    with coordinator.node(b.credential) as node:
        r = node.put(
            "/api/v1/node/subnets",
            json={"subnets": ["10.2.0.0/16", PUBLIC, HALF, SIXES, "10.1.0.0/16"], "site": "vpc1"},
        )
        assert r.status_code == 200, r.text
        half_the_internet = node.put("/api/v1/node/subnets", json={"subnets": ["0.0.0.0/1"]})
        assert_error(half_the_internet, 422, "invalid_route")
    return {"gw-a": a, "gw-b": b, "gw-c": c}


def test_what_no_rule_may_approve_is_pending_and_in_no_netmap(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    got = routes(admin)
    assert (got["10.1.0.0/16", "gw-a"]["state"], got["10.1.0.0/16", "gw-a"]["decided_by"]) == (
        "active",
        "token",
    )
    assert (got["10.2.0.0/16", "gw-b"]["state"], got["10.2.0.0/16", "gw-b"]["decided_by"]) == (
        "active",
        "token",
    )
    for prefix, why in ((PUBLIC, "outside"), (HALF, "outside"), (SIXES, "outside"), ("10.1.0.0/16", "gw-a")):
        route = got[prefix, "gw-b"]
        assert (route["state"], route["decided_by"]) == ("pending", None), route
        assert why in route["reason"] and "approval" in route["reason"], route
    seen = everywhere(coordinator, mesh)
    assert not {PUBLIC, HALF, SIXES, "10.1.0.0/16"} & (
        seen - {"10.1.0.0/16"} | _of(coordinator, mesh, "gw-b")
    )
    assert peers_by_name(netmap(coordinator, mesh["gw-c"]))["gw-b"]["allowed_ips"][1:] == ["10.2.0.0/16"]
    assert [r["prefix"] for r in netmap(coordinator, mesh["gw-b"])["routes"]] == [
        "10.2.0.0/16"
    ]  # not even standby
    warnings = admin.get("/api/v1/topology").json()["warnings"]
    assert f"wgmesh routes approve {PUBLIC} --node gw-b" in "\n".join(warnings)
    assert sum("pending approval" in w for w in warnings) == 4


def test_an_admin_approves_and_rejects_and_the_netmaps_follow(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    before = version(admin)
    r = decide(admin, "approve", "gw-b", PUBLIC, "the relay's address, routed on purpose")
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["decided_by"]) == ("active", "env")
    assert version(admin) > before  # a decision changes netmaps: long-polls wake
    assert PUBLIC in peers_by_name(netmap(coordinator, mesh["gw-a"]))["gw-b"]["allowed_ips"]
    # The HA claim, approved, stands by for gw-a's route: in gw-b's own netmap, in nobody's allowed IPs.
    r = decide(admin, "approve", "gw-b", "10.1.0.0/16")
    assert (r.json()["state"], r.json()["conflicting_with"]) == ("standby", "10.1.0.0/16@gw-a")
    assert "10.1.0.0/16" in [x["prefix"] for x in netmap(coordinator, mesh["gw-b"])["routes"]]
    assert "10.1.0.0/16" not in peers_by_name(netmap(coordinator, mesh["gw-c"]))["gw-b"]["allowed_ips"]
    # Rejected: out of every netmap, with the reason and who decided.
    r = decide(admin, "reject", "gw-b", HALF, "half the internet")
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["reason"], r.json()["decided_by"]) == (
        "rejected",
        "half the internet",
        "env",
    )
    assert HALF not in everywhere(coordinator, mesh)
    # The node stating the same subnets again changes no decision.
    with coordinator.node(mesh["gw-b"].credential) as node:
        again = node.put(
            "/api/v1/node/subnets",
            json={"subnets": ["10.2.0.0/16", PUBLIC, HALF, SIXES, "10.1.0.0/16"], "site": "vpc1"},
        )
    assert {(x["prefix"], x["state"]) for x in again.json()["routes"]} == {
        ("10.2.0.0/16", "active"),
        (PUBLIC, "active"),
        (HALF, "rejected"),
        (SIXES, "pending"),
        ("10.1.0.0/16", "standby"),
    }
    # A rejected prefix withdrawn and advertised again is a new claim: pending, never active by itself.
    with coordinator.node(mesh["gw-b"].credential) as node:
        node.put("/api/v1/node/subnets", json={"subnets": ["10.2.0.0/16"], "site": "vpc1"})
        node.put("/api/v1/node/subnets", json={"subnets": ["10.2.0.0/16", HALF], "site": "vpc1"})
    assert routes(admin)[HALF, "gw-b"]["state"] == "pending"


def test_each_decision_is_audited_and_read_only_tokens_are_refused(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    r = admin.post("/api/v1/admin-tokens", json={"name": "routes-reader", "read_only": True})
    reader = r.json()["token"]
    with coordinator.admin(reader) as ro:
        for verdict in ("approve", "reject"):
            assert_error(decide(ro, verdict, "gw-b", HALF), 403, "read_only")
    assert routes(admin)[HALF, "gw-b"]["state"] == "pending"
    assert decide(admin, "reject", "gw-b", HALF, "no").status_code == 200
    entries = admin.get("/api/v1/audit", params={"limit": 1000}).json()["entries"]
    decisions = [
        (e["action"], e["actor"], e["target"], e["detail"])
        for e in entries
        if e["action"].startswith("route.")
    ]
    assert decisions[-1] == ("route.reject", "env", "gw-b", {"prefix": HALF, "reason": "no"})
    assert (
        "route.approve",
        "env",
        "gw-b",
        {"prefix": PUBLIC, "reason": "the relay's address, routed on purpose"},
    ) in decisions
    # Only a prefix the node advertises can be decided on; the prefix is checked like any other.
    assert_error(decide(admin, "approve", "gw-b", "10.9.0.0/16"), 404, "unknown_route")
    assert_error(decide(admin, "approve", "gw-nobody", "10.9.0.0/16"), 404, "unknown_node")
    assert_error(decide(admin, "approve", "gw-b", "10.9.0.1/16"), 422)


def test_the_network_rule_approves_private_space_only(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    with coordinator.node(mesh["gw-c"].credential) as node:
        node.put("/api/v1/node/subnets", json={"subnets": ["10.30.0.0/16", "198.51.100.0/24"]})
    assert routes(admin)["10.30.0.0/16", "gw-c"]["state"] == "pending"
    r = admin.patch("/api/v1/network", json={"auto_approve": ["10.30.0.0/15", "0.0.0.0/0"]})
    assert r.status_code == 200, r.text
    assert r.json()["auto_approve"] == ["10.30.0.0/15", "0.0.0.0/0"]
    got = routes(admin)
    assert (got["10.30.0.0/16", "gw-c"]["state"], got["10.30.0.0/16", "gw-c"]["decided_by"]) == (
        "active",
        "network",
    )
    assert got["198.51.100.0/24", "gw-c"]["state"] == "pending"  # a rule never covers public space
    assert "10.30.0.0/16" in peers_by_name(netmap(coordinator, mesh["gw-a"]))["gw-c"]["allowed_ips"]
    # The rule is a rule: cleared, what only it approved is pending again.
    assert admin.patch("/api/v1/network", json={"auto_approve": []}).json()["auto_approve"] == []
    assert routes(admin)["10.30.0.0/16", "gw-c"]["state"] == "pending"


def test_subnets_an_admin_lists_are_approved_by_that_admin(
    admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    r = admin.patch("/api/v1/nodes/gw-c", json={"subnets": ["10.30.0.0/16", "192.0.2.0/24"]})
    assert r.status_code == 200, r.text
    got = routes(admin)
    for prefix in ("10.30.0.0/16", "192.0.2.0/24"):
        assert (got[prefix, "gw-c"]["state"], got[prefix, "gw-c"]["decided_by"]) == ("active", "env")
    r = admin.post(
        "/api/v1/nodes", json={"name": "static-x", "generate_keys": True, "subnets": ["192.0.3.0/24"]}
    )
    assert r.status_code == 201, r.text
    assert routes(admin)["192.0.3.0/24", "static-x"]["decided_by"] == "env"


def test_tokens_show_what_they_allow(admin: httpx.Client) -> None:
    made = create_token(admin, allow_subnets=["10.8.0.0/16", "fd00:8::/48"])
    assert made["allow_subnets"] == ["10.8.0.0/16", "fd00:8::/48"]
    listed = {t["id"]: t for t in admin.get("/api/v1/tokens").json()["tokens"]}
    assert listed[made["id"]]["allow_subnets"] == ["10.8.0.0/16", "fd00:8::/48"]
    assert_error(admin.post("/api/v1/tokens", json={"allow_subnets": ["10.8.0.1/16"]}), 422)


BAD_ENDPOINTS = [
    ("127.0.0.1:51820", "loopback"),
    ("[::1]:51820", "loopback"),
    ("[::ffff:127.0.0.1]:51820", "loopback"),
    ("0.0.0.0:51820", "unspecified"),
    ("169.254.10.1:51820", "link-local"),
    ("[fe80::1]:51820", "link-local"),
    ("224.0.0.5:51820", "multicast"),
    ("100.96.0.200:51820", "overlay"),  # the module coordinator's overlay is 100.96.0.0/16
]


@pytest.mark.parametrize(("endpoint", "what"), BAD_ENDPOINTS)
def test_endpoints_no_peer_should_send_to_are_refused(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled], endpoint: str, what: str
) -> None:
    token = create_token(admin)["token"]
    with coordinator.anonymous() as anon:
        r = anon.post("/api/v1/enroll", json=enroll_body(token, "gw-bad-endpoint", endpoints=[endpoint]))
    error = assert_error(r, 422, "invalid_endpoint")
    assert what in error["message"]
    with coordinator.node(mesh["gw-c"].credential) as node:
        before = version(admin)
        error = assert_error(
            node.post("/api/v1/status", json={"endpoints": [endpoint]}), 422, "invalid_endpoint"
        )
        assert what in error["message"]
        if endpoint.startswith(("[", "0.", "224")) is False:
            host = endpoint.rpartition(":")[0]
            assert_error(node.post("/api/v1/status", json={"eth0_ip": host}), 422, "invalid_endpoint")
    assert version(admin) == before
    assert admin.get("/api/v1/nodes/gw-c").json()["endpoints"] == []


def test_a_good_endpoint_still_passes(coordinator: Api, mesh: dict[str, Enrolled]) -> None:
    post_status(
        coordinator,
        mesh["gw-c"],
        {"endpoints": ["198.51.100.3:51820", "10.3.0.1:51820"], "eth0_ip": "10.3.0.1"},
    )
