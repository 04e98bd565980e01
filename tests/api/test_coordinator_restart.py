"""Restarting the coordinator on the same SQLite file keeps nodes, routes, versions and credentials."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from coordinator_harness import (
    Coordinator,
    assert_error,
    create_token,
    enroll,
    enroll_body,
    netmap,
    state,
)
from metrics_harness import scrape, value

from wgmesh.coordinator.main import GRACEFUL_SHUTDOWN
from wgmesh.lab.timescale import scaled
from wgmesh.lab.wait import wait_until


def test_state_versions_and_credentials_survive_a_restart(tmp_path: Path) -> None:
    c = Coordinator(db=tmp_path / "c.db", log=tmp_path / "c.log")
    try:
        c.start()
        with c.admin() as admin, c.anonymous() as anon:
            reusable = create_token(admin, reusable=True, allow_subnets=["10.0.0.0/8"])
            one_time = create_token(admin, allow_subnets=["10.2.5.0/24"])
            a = enroll(anon, reusable["token"], "gw-a", subnets=["10.1.0.0/16"], site="vpc1")
            b = enroll(anon, reusable["token"], "gw-b", subnets=["10.1.0.0/16", "10.2.0.0/16"], site="vpc1")
            enroll(anon, one_time["token"], "gw-c", subnets=["10.2.5.0/24"])
            # gw-b joins gw-a's prefix: an HA claim an admin approves (and a decision survives a restart).
            r = admin.post("/api/v1/nodes/gw-b/routes/approve", json={"prefix": "10.1.0.0/16"})
            assert r.status_code == 200, r.text
            assert admin.put("/api/v1/pairs/gw-a/gw-c", json={"p2p": "off"}).status_code == 200
            with c.node(b.credential) as node_b:
                assert node_b.post("/api/v1/status", json={"eth0_ip": "10.2.0.1"}).status_code == 200
            before = state(admin)
            maps_before = {n.name: netmap(c, n) for n in (a, b)}
        assert {(r["prefix"], r["gateway"], r["state"]) for r in before["/api/v1/routes"]["routes"]} == {
            ("10.1.0.0/16", "gw-a", "active"),
            ("10.1.0.0/16", "gw-b", "standby"),
            ("10.2.0.0/16", "gw-b", "active"),
            ("10.2.5.0/24", "gw-c", "conflict"),
        }
        c.stop()

        c.start()
        with c.admin() as admin, c.anonymous() as anon:
            after = state(admin)
            assert after == before
            for node in (a, b):
                again = netmap(c, node)  # the node credential still works
                assert again == maps_before[node.name]  # same version, peers, psks, routes
            with c.node(a.credential) as node_a:
                assert node_a.get("/api/v1/netmap", params={"since": before["version"]}).status_code == 304
            # The one-time token stays used; the reusable one still works and bumps the version by one.
            assert_error(
                anon.post("/api/v1/enroll", json=enroll_body(one_time["token"], "gw-x")), 401, "token_used"
            )
            enroll(anon, reusable["token"], "gw-d")
            assert state(admin)["version"] == before["version"] + 1
            # Overlay addresses are not handed out twice across restarts.
            addresses = [n["overlay_ip"] for n in admin.get("/api/v1/nodes").json()["nodes"]]
            assert len(set(addresses)) == len(addresses) == 4
    finally:
        c.stop()


def test_a_client_holding_an_idle_connection_does_not_hold_the_stop_up(tmp_path: Path) -> None:
    """An idle keep-alive TLS connection (a client's pool between requests) is dropped at SIGTERM; it once
    held every stop up for the whole grace period, waiting for a close_notify the client never sent."""
    c = Coordinator(db=tmp_path / "c.db", log=tmp_path / "c.log")
    try:
        c.start()
        with c.admin() as admin:
            assert admin.get("/api/v1/nodes").status_code == 200  # the connection stays in the pool
            started = time.monotonic()
            c.stop()
            # Dropped: a stop takes a fraction of a second; held, never less than the grace period.
            assert time.monotonic() - started < GRACEFUL_SHUTDOWN
    finally:
        c.stop()


def test_a_held_long_poll_is_answered_at_once_when_the_coordinator_stops(tmp_path: Path) -> None:
    """A long-poll with nothing new answers 304 as soon as the coordinator stops, so the stop does not wait
    out its grace period and the agent asks again (and finds it gone) at once; it was cut after 5 s."""
    c = Coordinator(db=tmp_path / "c.db", log=tmp_path / "c.log")
    try:
        c.start()
        with c.admin() as admin, c.anonymous() as anon:
            node = enroll(anon, create_token(admin)["token"], "gw-poll")
        answers: list[int | str] = []

        def poll() -> None:
            with c.node(node.credential) as client:
                try:
                    since = node.first_netmap["version"]
                    r = client.get("/api/v1/netmap", params={"since": since, "wait": 25}, timeout=30)
                    answers.append(r.status_code)
                except httpx.TransportError as exc:
                    answers.append(type(exc).__name__)

        held = threading.Thread(target=poll, daemon=True)
        held.start()
        wait_until(
            lambda: value(scrape(c.metrics_url + "/metrics"), "wgmesh_netmap_long_polls") == 1,
            5,
            "a held poll",
        )
        started = time.monotonic()
        c.stop()
        stopped = time.monotonic() - started
        held.join(scaled(5))
        assert answers == [304]
        assert stopped < GRACEFUL_SHUTDOWN  # it waited for the poll's whole grace period before
    finally:
        c.stop()
