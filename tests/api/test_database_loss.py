"""A coordinator that loses its PostgreSQL database (issue 17): it keeps answering long-polls from the
registry snapshot it holds, refuses writes with 503 `database_unavailable` and a Retry-After, says so in
/healthz and in one log line; once the database is back everything resumes without a restart. The loss is
made on a database of its own (connections refused and ended), so the session's cluster serves on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import coordinator_harness as harness
import psycopg
from cli_harness import base_env, run_cli
from coordinator_harness import Coordinator, assert_error, netmap
from pg_harness import Cluster
from sqlalchemy.engine import make_url

from wgmesh.lab.wait import wait_until

RECOVERY_BUDGET = 5.0
"""Seconds (reference machine) from the database accepting connections again to a healthy coordinator."""


@contextmanager
def database_lost(cluster: Cluster, url: str) -> Iterator[None]:
    """No connection to the database of `url` for the block: new ones refused, open ones ended."""
    name = make_url(url).database
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'.encode())
        conn.execute(b"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        yield
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'.encode())


def test_without_its_database_a_coordinator_serves_long_polls_refuses_writes_and_recovers(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    with pg_cluster.database() as url:
        c = Coordinator(db=tmp_path / "unused.db", log=tmp_path / "c.log", database=url)
        with harness.running(c):
            with c.admin() as admin:
                token = harness.create_token(admin)["token"]
                with c.anonymous() as anon:
                    node = harness.enroll(anon, token, "gw-db")
                held = netmap(c, node)  # the coordinator now holds this snapshot and knows the credential
            # The clients first: the test reads the pin they check from the database.
            assert c.admin_token is not None
            cli = base_env(tmp_path) | {
                "WGMESH_URL": c.url,
                "WGMESH_TOKEN": c.admin_token,
                "WGMESH_PIN": str(c.pin),
            }
            with c.node(node.credential) as client, c.admin() as admin, c.anonymous() as anon:
                with database_lost(pg_cluster, url):
                    r = client.get("/api/v1/netmap", params={"since": "-1"})
                    assert r.status_code == 200, r.text
                    assert r.json() == held
                    r = client.get("/api/v1/netmap", params={"since": held["version"], "wait": "0.2"})
                    assert r.status_code == 304  # a long-poll held and answered, not an error
                    r = client.post("/api/v1/status", json={})
                    assert_error(r, 503, "database_unavailable")
                    assert r.headers["retry-after"] == "5"
                    assert_error(admin.patch("/api/v1/nodes/gw-db", json={"tags": ["x"]}), 503)
                    r = anon.get("/healthz")
                    assert r.status_code == 503
                    assert r.json() == {
                        "status": "degraded",
                        "version": held["version"],
                        "database": "unavailable",
                    }
                    r = anon.post("/api/v1/enroll", json=harness.enroll_body(token, "gw-late"))
                    assert_error(r, 503, "database_unavailable")  # a write like any other, never a 500
                    # `wgmesh status` says in one line which coordinator lost its database
                    said = run_cli("status", env=cli)
                    assert said.code == 1
                    line = said.one_line_error()
                    assert c.url in line and "database is unavailable" in line, line
                wait_until(  # the budget is scaled inside
                    lambda: anon.get("/healthz").status_code == 200,
                    RECOVERY_BUDGET,
                    "coordinator healthy again",
                )
            with c.admin() as admin:
                r = admin.patch("/api/v1/nodes/gw-db", json={"tags": ["back"]})
                assert r.status_code == 200, r.text
            after = netmap(c, node, since=held["version"], wait=5)
            assert after["version"] > held["version"]
        text = c.log.read_text()
        assert text.count('event="database unavailable') == 1, text
        assert text.count('event="database available again"') == 1, text
        assert "request failed" not in text


def test_without_its_database_a_replaced_instance_is_not_served_from_memory(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    """The credentials a coordinator remembers hold only for the node's key as its snapshot has it: the
    old instance of a replaced node does not get the new one's netmap (and preshared keys) in an outage."""
    with pg_cluster.database() as url:
        c = Coordinator(db=tmp_path / "unused.db", log=tmp_path / "c.log", database=url)
        with harness.running(c):
            with c.admin() as admin, c.anonymous() as anon:
                old = harness.enroll(anon, harness.create_token(admin)["token"], "gw-replaced")
                netmap(c, old)  # remembered
                new = harness.enroll(
                    anon, harness.create_token(admin, replaces="gw-replaced")["token"], "gw-replaced"
                )
                held = netmap(c, new)  # the snapshot now names the new key
            with (
                c.node(old.credential) as stale,
                c.node(new.credential) as fresh,
                database_lost(pg_cluster, url),
            ):
                assert fresh.get("/api/v1/netmap").json() == held
                assert_error(stale.get("/api/v1/netmap"), 503, "database_unavailable")
