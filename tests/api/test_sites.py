"""Sites and HA groups at the API (issue 18): a node states its site with its credential (at enrollment,
in its subnets statement); identical prefixes of one site's gateways form an HA group once an admin
approves the standby, in every netmap; of two sites they are a conflict. The topology joins each group
with what the agents report (health, who carries the prefix to whom, the last failover)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from coordinator_harness import (
    Api,
    Enrolled,
    create_token,
    enroll,
    netmap,
    peers_by_name,
    post_status,
    version,
)
from coordinator_harness import routes_by_key as routes

BACKENDS = ("sqlite", "postgresql")
"""Run on both databases, through the same code (tests/api/conftest.py)."""

PREFIX = "10.42.0.0/24"


def state(coordinator: Api, node: Enrolled, subnets: list[str], site: str | None) -> dict[str, Any]:
    """`node`'s subnets statement (PUT /api/v1/node/subnets) with `site`; its answer."""
    body: dict[str, Any] = {"subnets": subnets}
    if site is not None:
        body["site"] = site
    with coordinator.node(node.credential) as client:
        r = client.put("/api/v1/node/subnets", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture(scope="module")
def mesh(coordinator: Api, admin: httpx.Client) -> dict[str, Enrolled]:
    """gw2 and gw2b serve site vpc2 and advertise PREFIX (gw2b's claim approved by an admin); vm1 is a
    plain node; gw3 serves vpc3."""
    token = create_token(admin, reusable=True, allow_subnets=["10.0.0.0/8"])["token"]
    with coordinator.anonymous() as anon:
        nodes = {
            "gw2": enroll(anon, token, "gw2", subnets=[PREFIX], site="vpc2"),
            "gw2b": enroll(anon, token, "gw2b", subnets=[PREFIX], site="vpc2"),
            "gw3": enroll(anon, token, "gw3", site="vpc3"),
            "vm1": enroll(anon, token, "vm1"),
        }
    r = admin.post("/api/v1/nodes/gw2b/routes/approve", json={"prefix": PREFIX})
    assert r.status_code == 200, r.text
    return nodes


def test_a_node_has_the_site_it_names_else_its_own(admin: httpx.Client, mesh: dict[str, Enrolled]) -> None:
    sites = {n["name"]: n["site"] for n in admin.get("/api/v1/nodes").json()["nodes"]}
    assert sites == {"gw2": "vpc2", "gw2b": "vpc2", "gw3": "vpc3", "vm1": "vm1"}
    r = admin.post("/api/v1/nodes", json={"name": "laptop", "generate_keys": True})
    assert r.status_code == 201, r.text
    assert admin.get("/api/v1/nodes/laptop").json()["site"] == "laptop"  # a static peer: its own site
    assert admin.delete("/api/v1/nodes/laptop").status_code == 200


def test_an_approved_standby_of_the_site_makes_an_ha_group_in_every_netmap(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    got = routes(admin)
    assert got[PREFIX, "gw2"]["state"] == "active"
    standby = got[PREFIX, "gw2b"]
    assert (standby["state"], standby["decided_by"]) == ("standby", "env")
    assert standby["reason"] == f"standby for {PREFIX}@gw2 (site vpc2)"
    group = {"prefix": PREFIX, "site": "vpc2", "members": [mesh["gw2"].node_id, mesh["gw2b"].node_id]}
    for node in mesh.values():
        nm = netmap(coordinator, node)
        assert nm["ha_groups"] == [group], node.name
    # allowed IPs as before: the prefix on the primary's peer entry only
    peers = peers_by_name(netmap(coordinator, mesh["vm1"]))
    assert PREFIX in peers["gw2"]["allowed_ips"]
    assert PREFIX not in peers["gw2b"]["allowed_ips"]


def test_the_same_prefix_from_another_site_is_a_conflict_naming_it(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    r = admin.patch("/api/v1/nodes/gw3", json={"subnets": [PREFIX]})  # an admin's list: approved
    assert r.status_code == 200, r.text
    conflict = routes(admin)[PREFIX, "gw3"]
    assert conflict["state"] == "conflict"
    assert conflict["conflicting_with"] == f"{PREFIX}@gw2"
    assert "site vpc2" in conflict["reason"] and "wgmesh-agent --site" in conflict["reason"]
    # It joins no group, and the group stays as it was.
    assert [g["members"] for g in netmap(coordinator, mesh["vm1"])["ha_groups"]] == [
        [mesh["gw2"].node_id, mesh["gw2b"].node_id]
    ]
    assert admin.patch("/api/v1/nodes/gw3", json={"subnets": []}).status_code == 200


def test_a_change_of_site_is_written_once_and_reclassifies(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    before = version(admin)
    # The same statement again writes nothing: a fleet restart wakes no long-poll.
    assert state(coordinator, mesh["gw2b"], [PREFIX], "vpc2")["routes"][0]["state"] == "standby"
    assert version(admin) == before
    # No site: a site of its own. The standby becomes a conflict, the group is gone.
    moved = state(coordinator, mesh["gw2b"], [PREFIX], None)
    assert moved["routes"][0]["state"] == "conflict"
    assert version(admin) == before + 1
    assert admin.get("/api/v1/nodes/gw2b").json()["site"] == "gw2b"
    assert netmap(coordinator, mesh["vm1"])["ha_groups"] == []
    assert state(coordinator, mesh["gw2b"], [PREFIX], None)["routes"][0]["state"] == "conflict"
    assert version(admin) == before + 1
    # Back to vpc2: the admin's approval stayed on the route, so it stands by again.
    assert state(coordinator, mesh["gw2b"], [PREFIX], "vpc2")["routes"][0]["state"] == "standby"
    assert version(admin) == before + 2
    assert len(netmap(coordinator, mesh["vm1"])["ha_groups"]) == 1


def test_a_site_is_a_name(coordinator: Api, mesh: dict[str, Enrolled]) -> None:
    with coordinator.node(mesh["gw2b"].credential) as client:
        r = client.put("/api/v1/node/subnets", json={"subnets": [PREFIX], "site": "VPC 2!"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"]


def ha_status(holder: str | None, code: str, **kw: Any) -> dict[str, Any]:
    return {"prefix": PREFIX, "holder": holder, "code": code, **kw}


def test_the_topology_joins_each_group_with_the_agents_reports(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    keys = {name: node.keypair.public_key for name, node in mesh.items()}

    def peer(name: str, health: str | None) -> dict[str, Any]:
        return {"public_key": keys[name], "health": health}

    # vm1 lost gw2 and moved the prefix to gw2b; gw3 still sends it to gw2; gw2b carries it itself.
    post_status(
        coordinator,
        mesh["vm1"],
        {
            "peers": [peer("gw2", "down"), peer("gw2b", "up")],
            "ha": [
                ha_status(
                    "gw2b",
                    "holder_down",
                    reason="gw2 answers no probe",
                    changed_at="2026-12-02T10:00:05Z",
                    moved_from="gw2",
                )
            ],
        },
    )
    post_status(
        coordinator,
        mesh["gw3"],
        {
            "peers": [peer("gw2", "up"), peer("gw2b", "unknown")],
            "ha": [ha_status("gw2", "primary", changed_at="2026-12-02T09:00:00Z")],
        },
    )
    post_status(
        coordinator, mesh["gw2b"], {"peers": [peer("gw2", "down")], "ha": [ha_status("gw2b", "holder_down")]}
    )
    topology = admin.get("/api/v1/topology").json()
    (group,) = topology["ha_groups"]
    assert (group["prefix"], group["site"]) == (PREFIX, "vpc2")
    primary, standby = group["members"]
    assert (primary["node"], primary["role"], primary["online"]) == ("gw2", "primary", False)
    assert primary["health"] == {"up": 1, "down": 2, "unknown": 0}
    assert primary["carried_by"] == ["gw3"]
    assert (standby["node"], standby["role"], standby["online"]) == ("gw2b", "standby", True)
    assert standby["health"] == {"up": 1, "down": 0, "unknown": 1}
    assert standby["carried_by"] == ["gw2b", "vm1"]
    assert group["last_failover"] == {
        "at": "2026-12-02T10:00:05Z",
        "reported_by": "vm1",
        "code": "holder_down",
        "holder": "gw2b",
        "moved_from": "gw2",
        "reason": "gw2 answers no probe",
    }
    # Each node's peer views carry its own probes' verdict.
    vm1 = next(n for n in topology["nodes"] if n["name"] == "vm1")
    assert {p["name"]: p["health"] for p in vm1["peers"]}["gw2"] == "down"
