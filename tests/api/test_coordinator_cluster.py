"""Two real coordinator processes on one PostgreSQL database, both active: a change made through A wakes
the long-polls and event streams held on B (LISTEN/NOTIFY, wgmesh/coordinator/listener.py), dashboard
sessions made on one serve on the other (they live in the database), the listener survives losing its
connection, and the cluster-wide job runs on one coordinator at a time (wgmesh/coordinator/sweeps.py).
On SQLite nothing changes: the other API and web tests run there as before."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from coordinator_harness import ENTRY, Coordinator, assert_error, create_token, enroll, netmap, running
from pg_harness import Cluster
from sqlalchemy.engine import make_url
from test_long_poll import Poll, held

from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store
from wgmesh.coordinator.sweeps import Election
from wgmesh.lab.timescale import scaled
from wgmesh.lab.wait import wait_until
from wgmesh.models import Network
from wgmesh.pins import PIN_LINE

WAKE_BUDGET = 0.5
"""Seconds (reference machine) from a write's answer on A to the long-poll's answer on B."""
STREAM_BUDGET = 1.0
"""The same for an event stream, which coalesces a burst for 0.25 s before it tells the page."""


@dataclass
class Pair:
    a: Coordinator
    b: Coordinator
    url: str


@pytest.fixture(scope="module")
def pair(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("cluster")
    with pg_cluster.database() as url:
        a = Coordinator(db=tmp / "unused-a.db", log=tmp / "a.log", database=url)
        b = Coordinator(db=tmp / "unused-b.db", log=tmp / "b.log", database=url)
        with running(a), running(b):
            wait_until(lambda: listening(b) >= 1, 10, "B's change listener")
            yield Pair(a, b, url)


def database(url: str) -> str:
    """The database name of a cluster URL."""
    return str(make_url(url).database)


def listening(c: Coordinator) -> int:
    """How many times the coordinator's change listener has (re)connected, as its log says."""
    return c.log.read_text().count('event="listening for changes"')


def login(c: Coordinator, token: str | None = None) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=c.url, timeout=10.0, trust_env=False, verify=c.verify)
    r = client.post("/api/v1/session", json={"token": token or c.admin_token})
    assert r.status_code == 201, r.text
    return client, str(r.json()["csrf_token"])


def on(c: Coordinator, logged_in: httpx.Client) -> httpx.Client:
    """A client of coordinator `c` carrying the cookie `logged_in` got from another coordinator."""
    return httpx.Client(
        base_url=c.url, timeout=10.0, trust_env=False, verify=c.verify, cookies=logged_in.cookies
    )


def wake_on_b(pair: Pair, change: str) -> float:
    """Hold a long-poll on B, make a change through A; the seconds from A's answer to B's."""
    with pair.a.admin() as admin:
        token = create_token(admin)["token"]
        with pair.a.anonymous() as anon:
            node = enroll(anon, token, f"gw-{change}")
        since = netmap(pair.b, node)["version"]
        poll = Poll(pair.b, node, since, wait=20)
        poll.start()
        assert held(poll), "B answered before anything changed"
        r = admin.patch(f"/api/v1/nodes/gw-{change}", json={"tags": [change]})
        assert r.status_code == 200, r.text
        changed_at = time.monotonic()
    answer = poll.result(timeout=scaled(10))
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] > since
    return poll.answered_at - changed_at


def test_a_change_through_a_wakes_a_long_poll_held_on_b(pair: Pair) -> None:
    delay = wake_on_b(pair, "first")
    print(f"long-poll on B answered {delay * 1000:.0f} ms after the change through A")
    assert delay < scaled(WAKE_BUDGET), f"B answered {delay:.3f} s after the change"


def test_an_event_stream_on_b_announces_a_write_made_through_a(pair: Pair) -> None:
    with (
        pair.b.admin() as client,
        client.stream("GET", "/api/v1/events", timeout=10.0) as r,
        pair.a.admin() as admin,
    ):
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: change"
        started = time.monotonic()
        assert admin.post("/api/v1/nodes", json={"name": "via-a", "generate_keys": True}).status_code == 201
        assert next(line for line in lines if line.startswith("event:")) == "event: change"
        delay = time.monotonic() - started
    print(f"event stream on B announced the write through A after {delay * 1000:.0f} ms")
    # well before the 15 s heartbeat: woken by the NOTIFY, not by a timer
    assert delay < scaled(STREAM_BUDGET)


def test_a_login_through_a_works_on_b_and_a_logout_through_b_ends_it_on_a(pair: Pair) -> None:
    client_a, csrf = login(pair.a)
    with closing(client_a), on(pair.b, client_a) as client_b:
        r = client_b.get("/api/v1/session")
        assert r.status_code == 200 and r.json()["csrf_token"] == csrf
        assert_error(client_b.post("/api/v1/tokens", json={}), 403, "csrf")
        r = client_b.post("/api/v1/tokens", json={}, headers={"x-csrf-token": csrf})
        assert r.status_code == 201, r.text
        assert client_b.delete("/api/v1/session", headers={"x-csrf-token": csrf}).status_code == 204
        assert_error(client_a.get("/api/v1/nodes"), 401, "invalid_session")
        assert_error(client_a.get("/api/v1/session"), 401, "invalid_session")


def test_a_token_revoked_through_a_ends_its_sessions_and_streams_on_b_at_once(pair: Pair) -> None:
    with pair.a.admin() as admin:
        r = admin.post("/api/v1/admin-tokens", json={"name": "watcher"})
        assert r.status_code == 201, r.text
        client_b, _ = login(pair.b, r.json()["token"])
        with closing(client_b), client_b.stream("GET", "/api/v1/events", timeout=10.0) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: change"
            assert client_b.get("/api/v1/nodes").status_code == 200
            started = time.monotonic()
            assert admin.delete("/api/v1/admin-tokens/watcher").status_code == 200
            assert_error(client_b.get("/api/v1/nodes"), 401, "invalid_session")
            # no other change: the revocation's own NOTIFY wakes the stream on B
            assert next(line for line in lines if line.startswith("event:")) == "event: logout"
            assert time.monotonic() - started < scaled(STREAM_BUDGET)


def test_the_listener_reconnects_after_losing_its_connection(pair: Pair, pg_cluster: Cluster) -> None:
    before = listening(pair.b)
    with psycopg.connect(pg_cluster.dsn(database(pair.url)), autocommit=True) as conn:
        ended = conn.execute(
            b"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            b"WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
        ).fetchall()
    assert len(ended) == 2, ended  # A's and B's listeners
    wait_until(lambda: listening(pair.b) > before, 10, "B's listener back")
    assert 'event="change listener lost the database"' in pair.b.log.read_text()
    assert wake_on_b(pair, "after") < scaled(WAKE_BUDGET)


def test_the_cluster_wide_job_runs_on_one_coordinator_and_moves_when_its_holder_dies(
    pg_url: str, pg_cluster: Cluster
) -> None:
    stores = [Store(pg_url) for _ in range(2)]
    Registry(stores[0]).initialise(Network())
    first, second = (Election(s) for s in stores)
    try:
        assert first.holding() and not second.holding()
        assert first.holding() and not second.holding()  # held, not taken again and again
        with psycopg.connect(pg_cluster.dsn(database(pg_url)), autocommit=True) as c:
            c.execute(b"SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'")
        # pg_terminate_backend only signals: the lock goes when that backend has exited
        wait_until(second.holding, 5, "the lock moving to the second when its holder's connection died")
        assert not first.holding()
        second.release()
        assert first.holding()
    finally:
        for e in (first, second):
            e.release()
        for s in stores:
            s.close()


def test_on_sqlite_the_one_coordinator_runs_the_job(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        assert Election(store).holding() and Election(store).holding()
    finally:
        store.close()


def test_coordinators_initialising_one_empty_database_at_once_make_it_once(
    pg_url: str, pg_cluster: Cluster
) -> None:
    env = {**os.environ, "WGMESH_ADMIN_TOKEN": "wgmesh-admin-" + "k" * 40}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ENTRY, "--db", pg_url, "init"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=scaled(60)) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, [err for _, err in outputs]
    pins = {line for out, _ in outputs for line in out.splitlines() if line.startswith(PIN_LINE)}
    assert len(pins) == 1, pins
    with closing(psycopg.connect(pg_cluster.dsn(database(pg_url)))) as conn:
        assert conn.execute(b"SELECT count(*) FROM schema_version").fetchone() == (1,)
        assert conn.execute(b"SELECT count(*) FROM networks").fetchone() == (1,)
        assert conn.execute(b"SELECT count(*) FROM admin_tokens").fetchone() == (1,)
