"""A registry with everything in it, filled through the API, and everything a coordinator serves about it:
what the migration and backup tests compare between a coordinator on the original and one on a copy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator_harness import Api, Enrolled, create_token, enroll, netmap, post_status, running
from inprocess_harness import InProcessCoordinator

from wgmesh.coordinator import identity
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store

RELAYS = ("--announce-relay", "tcp://198.18.0.1:8443")

ADMIN_READS = (
    "/api/v1/nodes",
    "/api/v1/tokens",
    "/api/v1/admin-tokens",
    "/api/v1/routes",
    "/api/v1/pairs",
    "/api/v1/network",
    "/api/v1/statuses",
    "/api/v1/audit?limit=1000",
)


@dataclass
class Before:
    """A registry with everything in it, and what its coordinator served."""

    url: str
    agents: dict[str, Enrolled]
    ops_token: str
    deleted_id: int
    seen: dict[str, Any]


def observe(c: Api, agents: dict[str, Enrolled], admin_token: str) -> dict[str, Any]:
    """Everything a coordinator serves about the registry: admin views, each agent's netmap and relay
    grant key, the revoked tickets and the pin (as `wgmesh-coordinator pin` reads it)."""
    seen: dict[str, Any] = {}
    with c.admin(admin_token) as admin:
        for path in ADMIN_READS:
            r = admin.get(path)
            assert r.status_code == 200, r.text
            seen[path] = r.json()
    for node in seen["/api/v1/nodes"]["nodes"]:
        node.pop("online")  # from the clock
    for status in seen["/api/v1/statuses"]["statuses"]:
        status.pop("online", None)
    for name, agent in agents.items():
        seen[f"netmap {name}"] = netmap(c, agent)
        with c.node(agent.credential) as client:
            grant = client.get("/api/v1/node/relay")
        assert grant.status_code == 200, grant.text
        seen[f"relay key {name}"] = grant.json()["coordinator_key"]
    store = Store(c.db_url)
    try:
        seen["pin"] = str(identity.ensure(store).pin)
        seen["revoked"] = Registry(store).relay_revocations()
    finally:
        store.close()
    return seen


def fill(tmp: Path) -> Before:
    """A coordinator on a SQLite file in `tmp`, filled through the API: agents, a static peer, tokens
    (used, unused, revoked), admin tokens (one revoked), routes with decisions, a pair override, a status
    report, the audit of all that, a deleted node (the highest id; its tickets revoked) and a rotation
    requested; stopped, with what it served."""
    c = InProcessCoordinator(db=tmp / "c.db", log=tmp / "c.log", extra=RELAYS)
    with running(c), c.admin() as admin, c.anonymous() as anon:
        reusable = create_token(admin, reusable=True, allow_subnets=["10.0.0.0/8"], tags=["site"])["token"]
        agents = {
            "gw-a": enroll(anon, reusable, "gw-a", subnets=["10.1.0.0/24"]),
            "gw-b": enroll(
                anon, reusable, "gw-b", subnets=["10.2.0.0/24", "203.0.113.0/24", "198.51.100.0/24"]
            ),
            "gw-d": enroll(anon, create_token(admin, description="one-time")["token"], "gw-d"),
        }
        static = admin.post("/api/v1/nodes", json={"name": "phone", "generate_keys": True, "subnets": []})
        assert static.status_code == 201, static.text
        gone = enroll(anon, reusable, "gw-c")  # the highest id: a new node must not take it
        create_token(admin, description="unused, expires", expires_in=3600)
        revoked = create_token(admin, description="revoked")
        assert admin.delete(f"/api/v1/tokens/{revoked['id']}").status_code == 200
        for verdict, prefix in (("approve", "203.0.113.0/24"), ("reject", "198.51.100.0/24")):
            r = admin.post(f"/api/v1/nodes/gw-b/routes/{verdict}", json={"prefix": prefix, "reason": "test"})
            assert r.status_code == 200, r.text
        assert admin.put("/api/v1/pairs/gw-a/gw-b", json={"p2p": "off", "rate": "10mbit"}).status_code == 200
        post_status(c, agents["gw-a"], {"endpoints": ["198.51.100.7:51820"], "eth0_ip": "10.1.0.5"})
        ops = admin.post("/api/v1/admin-tokens", json={"name": "ops", "read_only": False})
        assert ops.status_code == 201, ops.text
        assert admin.post("/api/v1/admin-tokens", json={"name": "old"}).status_code == 201
        assert admin.delete("/api/v1/admin-tokens/old").status_code == 200
        assert admin.delete("/api/v1/nodes/gw-c").status_code == 200  # a revocation
        assert admin.post("/api/v1/nodes/gw-d/rotate-key").status_code == 200  # a rotation requested
        seen = observe(c, agents, ops.json()["token"])
    assert seen["revoked"] and seen["revoked"][0].node_id == gone.node_id
    assert [
        n["rotate_requested_at"] is not None for n in seen["/api/v1/nodes"]["nodes"] if n["name"] == "gw-d"
    ] == [True]
    return Before(c.db_url, agents, ops.json()["token"], gone.node_id, seen)


def served(tmp: Path, url: str, before: Before) -> dict[str, Any]:
    """What a coordinator started on the database at `url` serves, with the credentials from before;
    then a new enrollment, which must get ids never used."""
    tmp.mkdir()
    c = InProcessCoordinator(db=tmp / "unused.db", log=tmp / "c.log", database=url, extra=RELAYS)
    with running(c):
        seen = observe(c, before.agents, before.ops_token)
        with c.admin(before.ops_token) as admin, c.anonymous() as anon:
            token = create_token(admin, reusable=True)
            assert token["id"] > max(t["id"] for t in before.seen["/api/v1/tokens"]["tokens"])
            fresh = enroll(anon, token["token"], "gw-new")
            assert (
                fresh.node_id > before.deleted_id
            )  # the deleted node's id stays unused (its tickets are revoked)
    return seen
