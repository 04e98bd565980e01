"""Tunnel MTUs through the API: the network default, a node's ceiling and what its underlay carries reach
the netmaps as each node's effective MTU; agents' reports move the registry version only when the
underlay's MTU changes; bad input changes nothing; a database of schema version 2 is upgraded in place."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from coordinator_harness import (
    Api,
    Coordinator,
    Enrolled,
    assert_error,
    create_token,
    enroll,
    enroll_body,
    netmap,
    peers_by_name,
    post_status,
    running,
    unchanged,
    undo_schema_down_to,
    version,
)

from wgmesh.coordinator import schema


@pytest.fixture(scope="module")
def trio(coordinator: Api, admin: httpx.Client) -> dict[str, Enrolled]:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.anonymous() as anon:
        return {
            "m-a": enroll(anon, token, "m-a"),
            "m-b": enroll(anon, token, "m-b", max_mtu=1360),  # its agent measured a narrow underlay
            "m-c": enroll(anon, token, "m-c"),
        }


@pytest.fixture
def network_mtu_restored(admin: httpx.Client) -> Iterator[None]:
    yield
    assert admin.patch("/api/v1/network", json={"mtu": 1420}).status_code == 200


def mtus(coordinator: Api, trio: dict[str, Enrolled], name: str) -> tuple[int, dict[str, int]]:
    """A node's own netmap MTU and the MTU its netmap gives each peer."""
    nm = netmap(coordinator, trio[name])
    return nm["mtu"], {p: peer["mtu"] for p, peer in peers_by_name(nm).items()}


def test_enrollment_stores_what_the_underlay_carries(
    coordinator: Api, admin: httpx.Client, trio: dict[str, Enrolled]
) -> None:
    b = admin.get("/api/v1/nodes/m-b").json()
    assert (b["mtu"], b["max_mtu"]) == (None, 1360)
    assert trio["m-b"].first_netmap["mtu"] == 1360  # the enrollment's own netmap already knows it
    a = admin.get("/api/v1/nodes/m-a").json()
    assert (a["mtu"], a["max_mtu"]) == (None, None)
    assert mtus(coordinator, trio, "m-a") == (1420, {"m-b": 1360, "m-c": 1420})


def test_network_default_reaches_every_netmap_and_bumps_the_version(
    coordinator: Api, admin: httpx.Client, trio: dict[str, Enrolled], network_mtu_restored: None
) -> None:
    assert admin.get("/api/v1/network").json()["mtu"] == 1420
    before = version(admin)
    r = admin.patch("/api/v1/network", json={"mtu": 1400})
    assert r.status_code == 200, r.text
    assert r.json()["mtu"] == 1400
    assert version(admin) > before  # long-polling agents hear of it
    assert admin.get("/api/v1/network").json()["mtu"] == 1400
    assert admin.get("/api/v1/topology").json()["network"]["mtu"] == 1400
    assert mtus(coordinator, trio, "m-a") == (1400, {"m-b": 1360, "m-c": 1400})
    assert mtus(coordinator, trio, "m-b") == (1360, {"m-a": 1400, "m-c": 1400})
    # A change of another setting keeps the MTU.
    assert admin.patch("/api/v1/network", json={"p2p": "auto"}).json()["mtu"] == 1400


def test_node_ceiling_is_set_kept_and_cleared(
    coordinator: Api, admin: httpx.Client, trio: dict[str, Enrolled]
) -> None:
    r = admin.patch("/api/v1/nodes/m-a", json={"mtu": 1380})
    assert r.status_code == 200, r.text
    assert (r.json()["mtu"], r.json()["max_mtu"]) == (1380, None)
    assert mtus(coordinator, trio, "m-a") == (1380, {"m-b": 1360, "m-c": 1420})
    assert mtus(coordinator, trio, "m-c")[1]["m-a"] == 1380
    # A ceiling above the underlay's room: the underlay wins.
    assert admin.patch("/api/v1/nodes/m-b", json={"mtu": 1400}).json()["mtu"] == 1400
    assert mtus(coordinator, trio, "m-b")[0] == 1360
    # Omitted: kept; explicit null: back to the network's default.
    assert admin.patch("/api/v1/nodes/m-a", json={"p2p": "auto"}).json()["mtu"] == 1380
    assert admin.patch("/api/v1/nodes/m-a", json={"mtu": None}).json()["mtu"] is None
    assert admin.patch("/api/v1/nodes/m-b", json={"mtu": None}).json()["mtu"] is None
    assert mtus(coordinator, trio, "m-c") == (1420, {"m-a": 1420, "m-b": 1360})


def test_status_reports_bump_the_version_only_when_the_underlay_mtu_changes(
    coordinator: Api, admin: httpx.Client, trio: dict[str, Enrolled]
) -> None:
    c = trio["m-c"]
    report: dict[str, Any] = {"eth0_ip": "10.3.0.5", "mtu": 1420, "max_mtu": 1420}
    first = post_status(coordinator, c, report)
    assert first["changed"] is True  # eth0 and the underlay's MTU are new
    # The same again, and a different interface MTU alone: nothing peers see, no version bump.
    assert post_status(coordinator, c, report) == {"version": first["version"], "changed": False}
    same = post_status(coordinator, c, {**report, "mtu": 1380})
    assert same == {"version": first["version"], "changed": False}
    assert version(admin) == first["version"]
    shown = admin.get("/api/v1/nodes/m-c/status").json()["report"]
    assert (shown["mtu"], shown["max_mtu"]) == (1380, 1420)  # what the agent set is kept for admins
    # A smaller underlay: stored on the node, the version moves, peers get the new MTU.
    moved = post_status(coordinator, c, {**report, "max_mtu": 1300})
    assert moved["changed"] is True and moved["version"] > first["version"]
    assert admin.get("/api/v1/nodes/m-c").json()["max_mtu"] == 1300
    assert mtus(coordinator, trio, "m-a")[1]["m-c"] == 1300
    assert mtus(coordinator, trio, "m-c")[0] == 1300
    # An agent that no longer knows (null) is a change too: back to the ceiling.
    gone = post_status(coordinator, c, {"eth0_ip": "10.3.0.5"})
    assert gone["changed"] is True and gone["version"] > moved["version"]
    assert admin.get("/api/v1/nodes/m-c").json()["max_mtu"] is None
    assert mtus(coordinator, trio, "m-c")[0] == 1420


def test_a_held_long_poll_is_not_woken_by_an_unchanged_underlay_mtu(
    coordinator: Api, trio: dict[str, Enrolled]
) -> None:
    a, c = trio["m-a"], trio["m-c"]
    post_status(coordinator, c, {"max_mtu": 1420})
    current = netmap(coordinator, a)["version"]
    post_status(coordinator, c, {"max_mtu": 1420, "mtu": 1400})
    with coordinator.node(a.credential) as client:
        r = client.get("/api/v1/netmap", params={"since": current, "wait": 0.3})
    assert r.status_code == 304


@pytest.mark.parametrize(
    ("path", "method", "body", "words"),
    [
        ("/api/v1/network", "PATCH", {"mtu": 1279}, "mtu: Input should be greater than or equal to 1280"),
        ("/api/v1/network", "PATCH", {"mtu": 9001}, "mtu: Input should be less than or equal to 9000"),
        ("/api/v1/network", "PATCH", {"mtu": "big"}, "mtu"),
        ("/api/v1/network", "PATCH", {"mtu": 1400.5}, "mtu"),
        ("/api/v1/nodes/m-a", "PATCH", {"mtu": 576}, "greater than or equal to 1280"),
        ("/api/v1/nodes/m-a", "PATCH", {"mtu": 65535}, "less than or equal to 9000"),
        ("/api/v1/nodes/m-a", "PATCH", {"max_mtu": 1400}, "max_mtu: Extra inputs are not permitted"),
    ],
)
def test_bad_mtus_are_refused_and_change_nothing(
    admin: httpx.Client,
    trio: dict[str, Enrolled],
    path: str,
    method: str,
    body: dict[str, object],
    words: str,
) -> None:
    with unchanged(admin):
        error = assert_error(admin.request(method, path, json=body), 422, "invalid")
    assert words in error["message"]


def test_null_network_mtu_changes_nothing(admin: httpx.Client, trio: dict[str, Enrolled]) -> None:
    """NetworkPatch reads null as "not given" (the network always has an MTU): the answer is the
    unchanged network, and the registry version moves as for any PATCH."""
    r = admin.patch("/api/v1/network", json={"mtu": None})
    assert r.status_code == 200, r.text
    assert r.json()["mtu"] == 1420


@pytest.mark.parametrize(
    "body",
    [{"max_mtu": 575}, {"max_mtu": 65536}, {"mtu": 0}, {"mtu": "wide"}, {"max_mtu": True}],
)
def test_bad_reported_mtus_are_422_and_change_nothing(
    coordinator: Api, admin: httpx.Client, trio: dict[str, Enrolled], body: dict[str, Any]
) -> None:
    with unchanged(admin), coordinator.node(trio["m-a"].credential) as client:
        error = assert_error(client.post("/api/v1/status", json=body), 422, "invalid")
    assert next(iter(body)) in error["message"]


def test_an_enrollment_with_a_bad_underlay_mtu_is_refused(coordinator: Api, admin: httpx.Client) -> None:
    created = create_token(admin)
    with unchanged(admin), coordinator.anonymous() as anon:
        r = anon.post("/api/v1/enroll", json=enroll_body(created["token"], "m-x", max_mtu=100))
        error = assert_error(r, 422, "invalid")
    assert "max_mtu: Input should be greater than or equal to 576" in error["message"]
    tokens = admin.get("/api/v1/tokens").json()["tokens"]
    assert [t["uses"] for t in tokens if t["id"] == created["id"]] == [0]  # still usable


def test_a_version_2_database_is_upgraded_at_start(tmp_path: Path) -> None:
    db = tmp_path / "v2.db"
    with running(Coordinator(db=db, log=tmp_path / "c.log")) as c, c.admin() as admin:
        token = create_token(admin)["token"]
        with c.anonymous() as anon:
            old = enroll(anon, token, "old-a")
        assert admin.patch("/api/v1/nodes/old-a", json={"rate": "10mbit"}).status_code == 200
    # Turn it into what version 2 wrote: no MTU columns or admin-token names, version rows 1 and 2.
    with sqlite3.connect(db) as conn:
        undo_schema_down_to(conn, 2)
    with running(Coordinator(db=db, log=tmp_path / "c2.log")) as c, c.admin() as admin:
        assert admin.get("/api/v1/network").json()["mtu"] == 1420  # the MTU agents used before
        node = admin.get("/api/v1/nodes/old-a").json()
        assert (node["mtu"], node["max_mtu"], node["rate"]) == (None, None, "10mbit")  # no ceiling
        assert netmap(c, old)["mtu"] == 1420  # the node's credential still works
        r = admin.patch("/api/v1/nodes/old-a", json={"mtu": 1380})
        assert r.status_code == 200, r.text
        assert netmap(c, old)["mtu"] == 1380
        assert admin.patch("/api/v1/network", json={"mtu": 1400}).json()["mtu"] == 1400
    assert "database schema upgraded" in (tmp_path / "c2.log").read_text()
    with sqlite3.connect(db) as conn:
        assert sorted(v for (v,) in conn.execute("SELECT version FROM schema_version")) == list(
            range(1, schema.SCHEMA_VERSION + 1)
        )
        assert conn.execute("SELECT mtu FROM networks").fetchall() == [(1400,)]
    # Started again: nothing left to upgrade, the data stays.
    with running(Coordinator(db=db, log=tmp_path / "c3.log")) as c, c.admin() as admin:
        assert admin.get("/api/v1/nodes/old-a").json()["mtu"] == 1380
    assert "database schema upgraded" not in (tmp_path / "c3.log").read_text()
