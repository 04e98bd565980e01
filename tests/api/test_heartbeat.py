"""POST /api/v1/node/heartbeat: an agent alive whose report stands but for counters (agent/reporting.py)."""

from __future__ import annotations

import httpx
from coordinator_harness import Api, assert_error, create_token, enroll, version

BACKENDS = ("sqlite", "postgresql")


def test_a_heartbeat_keeps_a_node_online_without_waking_anyone_and_asks_for_a_missing_report(
    coordinator: Api, admin: httpx.Client
) -> None:
    token = create_token(admin)["token"]
    with coordinator.anonymous() as anon:
        gw = enroll(anon, token, "hb-a")
    with coordinator.node(gw.credential) as client:
        first = client.post("/api/v1/node/heartbeat", json={"netmap_version": 1})
        assert first.status_code == 200, first.text
        assert first.json()["report_wanted"] is True  # nothing held from this node yet
        assert client.post("/api/v1/status", json={"endpoints": ["198.51.100.9:51820"]}).status_code == 200
        before = version(admin)
        reported_at = admin.get("/api/v1/nodes/hb-a/status").json()["reported_at"]
        seen = admin.get("/api/v1/nodes/hb-a").json()["last_seen"]
        again = client.post("/api/v1/node/heartbeat", json={})
        assert again.status_code == 200, again.text
        assert again.json() == {"version": before, "report_wanted": False}
    assert version(admin) == before  # nothing any netmap holds moved
    node = admin.get("/api/v1/nodes/hb-a").json()
    assert node["online"] is True
    assert node["last_seen"] > seen  # written with the second's other heartbeats, read after them
    # The report stands as it was made: a heartbeat does not pretend it is newer.
    assert admin.get("/api/v1/nodes/hb-a/status").json()["reported_at"] == reported_at


def test_a_heartbeat_needs_a_node_credential_and_a_valid_body(coordinator: Api, admin: httpx.Client) -> None:
    with coordinator.anonymous() as anon:
        assert_error(anon.post("/api/v1/node/heartbeat", json={}), 401)
    assert_error(admin.post("/api/v1/node/heartbeat", json={}), 401)
    token = create_token(admin)["token"]
    with coordinator.anonymous() as anon:
        gw = enroll(anon, token, "hb-b")
    with coordinator.node(gw.credential) as client:
        assert_error(client.post("/api/v1/node/heartbeat", json={"netmap_version": "x"}), 422)
        assert_error(client.post("/api/v1/node/heartbeat", json={"peers": []}), 422)
