"""GET /api/v1/nodes/{node}/config (a static peer's wg-quick configuration) and GET /api/v1/statuses."""

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
    netmap,
    peers_by_name,
    post_status,
    unchanged,
)

from wgmesh import keys


@pytest.fixture(scope="module")
def mesh(coordinator: Api, admin: httpx.Client) -> dict[str, Any]:
    token = create_token(admin, reusable=True, allow_subnets=["10.1.0.0/16"])["token"]
    with coordinator.anonymous() as anon:
        a = enroll(anon, token, "gw-a", subnets=["10.1.0.0/16"], endpoints=["198.51.100.1:51820"])
        b = enroll(anon, token, "gw-b", subnets=["10.1.2.0/24"])  # conflicts: not in allowed IPs
    r = admin.post("/api/v1/nodes", json={"name": "dev", "generate_keys": True, "listen_port": 51900})
    assert r.status_code == 201, r.text
    return {"gw-a": a, "gw-b": b, "dev": r.json()}


def test_config_of_a_static_peer(coordinator: Api, admin: httpx.Client, mesh: dict[str, Any]) -> None:
    with unchanged(admin):
        r = admin.get("/api/v1/nodes/dev/config")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    doc = r.json()
    dev = mesh["dev"]
    assert doc["node"] == "dev"
    assert keys.public_key_of(doc["interface"]["private_key"]) == dev["public_key"]
    assert doc["interface"]["address"] == [f"{dev['overlay_ip']}/32"]
    assert doc["interface"]["listen_port"] == 51900
    a: Enrolled = mesh["gw-a"]
    b: Enrolled = mesh["gw-b"]
    peers = {p["name"]: p for p in doc["peers"]}
    assert set(peers) == {"gw-a", "gw-b"}
    assert peers["gw-a"] == {
        "name": "gw-a",
        "public_key": a.keypair.public_key,
        "preshared_key": peers_by_name(netmap(coordinator, a))["dev"]["psk"],
        "allowed_ips": [f"{a.first_netmap['overlay_ip']}/32", "10.1.0.0/16"],
        "endpoint": "198.51.100.1:51820",
        "persistent_keepalive": 25,
    }
    assert peers["gw-b"]["allowed_ips"] == [f"{b.first_netmap['overlay_ip']}/32"]
    assert (peers["gw-b"]["endpoint"], peers["gw-b"]["persistent_keepalive"]) == (None, None)
    assert peers["gw-b"]["preshared_key"] == peers_by_name(netmap(coordinator, b))["dev"]["psk"]
    by_id = admin.get(f"/api/v1/nodes/{dev['id']}/config")
    assert by_id.status_code == 200 and by_id.json() == doc


def test_config_refusals(coordinator: Api, admin: httpx.Client, mesh: dict[str, Any]) -> None:
    with unchanged(admin):
        assert_error(admin.get("/api/v1/nodes/gw-a/config"), 422, "not_static")
        assert_error(admin.get("/api/v1/nodes/ghost/config"), 404, "unknown_node")
        with coordinator.anonymous() as anon:
            assert_error(anon.get("/api/v1/nodes/dev/config"), 401)
        with coordinator.node(mesh["gw-a"].credential) as node:
            assert_error(node.get("/api/v1/nodes/dev/config"), 401)  # a node is not an admin


def test_statuses_lists_every_report_by_node_name(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Any]
) -> None:
    a: Enrolled = mesh["gw-a"]
    b: Enrolled = mesh["gw-b"]
    post_status(coordinator, b, {"eth0_ip": "10.1.2.5"})
    post_status(
        coordinator,
        a,
        {"eth0_ip": "10.1.0.5", "peers": [{"public_key": b.keypair.public_key, "rx_bytes": 5}]},
    )
    r = admin.get("/api/v1/statuses")
    assert r.status_code == 200, r.text
    statuses = r.json()["statuses"]
    assert [s["node"] for s in statuses] == ["gw-a", "gw-b"]  # dev never reported
    assert statuses[0]["report"]["peers"][0]["rx_bytes"] == 5
    assert statuses[0] == admin.get("/api/v1/nodes/gw-a/status").json()
    with coordinator.anonymous() as anon:
        assert_error(anon.get("/api/v1/statuses"), 401)
