"""Bandwidth limits through the API: node and pair rates reach the netmaps; bad input changes nothing;
a database of schema version 1 is upgraded in place (through every later version) when the coordinator
starts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
from coordinator_harness import (
    Api,
    Coordinator,
    Enrolled,
    assert_error,
    create_token,
    enroll,
    netmap,
    peers_by_name,
    running,
    unchanged,
    undo_schema_down_to,
)

from wgmesh.coordinator import schema


@pytest.fixture(scope="module")
def trio(coordinator: Api, admin: httpx.Client) -> dict[str, Enrolled]:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.anonymous() as anon:
        return {name: enroll(anon, token, name) for name in ("q-a", "q-b", "q-c")}


def test_node_rate_is_the_nodes_own_netmap_limit(
    coordinator: Api, admin: httpx.Client, trio: dict[str, Enrolled]
) -> None:
    r = admin.patch("/api/v1/nodes/q-a", json={"rate": "50MBIT"})
    assert r.status_code == 200, r.text
    assert r.json()["rate"] == "50mbit"
    assert netmap(coordinator, trio["q-a"])["rate"] == "50mbit"
    assert netmap(coordinator, trio["q-b"])["rate"] is None
    # Omitted: kept; explicit null: removed.
    assert admin.patch("/api/v1/nodes/q-a", json={"p2p": "auto"}).json()["rate"] == "50mbit"
    assert admin.patch("/api/v1/nodes/q-a", json={"rate": None}).json()["rate"] is None
    assert netmap(coordinator, trio["q-a"])["rate"] is None


def test_pair_rate_reaches_both_ends_only(
    coordinator: Api, admin: httpx.Client, trio: dict[str, Enrolled]
) -> None:
    r = admin.put("/api/v1/pairs/q-a/q-b", json={"rate": "20mbit"})
    assert r.status_code == 200, r.text
    assert r.json() == {"a": "q-a", "b": "q-b", "p2p": None, "rate": "20mbit"}
    a, b = peers_by_name(netmap(coordinator, trio["q-a"])), peers_by_name(netmap(coordinator, trio["q-b"]))
    assert a["q-b"]["rate"] == "20mbit" and b["q-a"]["rate"] == "20mbit"
    assert a["q-c"]["rate"] is None
    assert peers_by_name(netmap(coordinator, trio["q-c"]))["q-a"]["rate"] is None
    r = admin.put("/api/v1/pairs/q-b/q-a", json={"rate": None})
    assert r.status_code == 204
    assert admin.get("/api/v1/pairs").json() == {"pairs": []}


@pytest.mark.parametrize(
    ("path", "method", "body", "status", "words"),
    [
        ("/api/v1/nodes/q-a", "PATCH", {"rate": "20mbps"}, 422, "bit, kbit, mbit or gbit"),
        ("/api/v1/nodes/q-a", "PATCH", {"rate": "1bit"}, 422, "between 8kbit and 100gbit"),
        ("/api/v1/nodes/q-a", "PATCH", {"rate": 20}, 422, None),
        ("/api/v1/pairs/q-a/q-b", "PUT", {"rate": "lots"}, 422, "must be a number and a unit"),
        ("/api/v1/pairs/q-a/q-b", "PUT", {}, 422, "give p2p and/or rate"),
        ("/api/v1/pairs/q-a/q-a", "PUT", {"rate": "1mbit"}, 422, "two different nodes"),
    ],
)
def test_bad_rates_are_refused_and_change_nothing(
    admin: httpx.Client,
    trio: dict[str, Enrolled],
    path: str,
    method: str,
    body: dict[str, object],
    status: int,
    words: str | None,
) -> None:
    with unchanged(admin):
        error = assert_error(admin.request(method, path, json=body), status)
    if words:
        assert words in error["message"]


def test_a_version_1_database_is_upgraded_at_start(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with running(Coordinator(db=db, log=tmp_path / "c.log")) as c, c.admin() as admin:
        token = create_token(admin)["token"]
        with c.anonymous() as anon:
            enroll(anon, token, "old-a")
    # Turn it into what version 1 wrote: no rate (version 2), MTU (version 3) or admin-token names
    # (version 4), version row 1.
    with sqlite3.connect(db) as conn:
        undo_schema_down_to(conn, 2)
        conn.execute("ALTER TABLE nodes DROP COLUMN rate")
        conn.execute("ALTER TABLE pairs DROP COLUMN rate")
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (1, '2026-11-25 00:00:00')")
    with running(Coordinator(db=db, log=tmp_path / "c2.log")) as c, c.admin() as admin:
        r = admin.patch("/api/v1/nodes/old-a", json={"rate": "10mbit"})
        assert r.status_code == 200, r.text
        assert [n["name"] for n in admin.get("/api/v1/nodes").json()["nodes"]] == ["old-a"]
        assert admin.get("/api/v1/network").json()["mtu"] == 1420  # both steps applied, in order
    assert "database schema upgraded" in (tmp_path / "c2.log").read_text()
    with sqlite3.connect(db) as conn:
        assert sorted(v for (v,) in conn.execute("SELECT version FROM schema_version")) == list(
            range(1, schema.SCHEMA_VERSION + 1)
        )
