"""`wgmesh-coordinator migrate`: a registry with everything in it moved SQLite → PostgreSQL → SQLite, and
coordinators on each copy serve the same nodes and netmaps (PSKs, relay-ticket key, pin) to the same
credentials; ids are never reused; refusals are one line, exit 2, and leave the target empty."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from coordinator_harness import ENTRY, undo_schema_down_to
from full_registry import Before, fill, served
from pg_harness import Cluster

from wgmesh.coordinator.schema import SCHEMA_VERSION

PASSWORD = "pw-never-printed-42"


def migrate(source: str, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ENTRY, "migrate", "--from", source, "--to", target],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def before(tmp_path_factory: pytest.TempPathFactory) -> Before:
    return fill(tmp_path_factory.mktemp("migrate"))


def test_sqlite_to_postgresql_and_back_serves_the_same(
    before: Before, pg_cluster: Cluster, tmp_path: Path
) -> None:
    with pg_cluster.database() as plain:
        target = plain.replace("wgmesh@", f"wgmesh:{PASSWORD}@")  # trust authentication ignores it
        done = migrate(before.url, target)
        assert done.returncode == 0, done.stderr
        assert PASSWORD not in done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert "table=nodes rows=4 " in "\n".join(lines)  # gw-a, gw-b, gw-d, phone
        assert f"next_id={before.deleted_id + 1}" in next(
            line for line in lines if line.startswith("table=nodes ")
        )
        assert lines[-1].startswith("migrated ") and lines[-1].endswith("row counts and digests match")
        assert "wgmesh:***@" in lines[-1]

        # A copy of the PostgreSQL database before a coordinator writes to it, to move back to SQLite.
        back = tmp_path / "back.db"
        again = migrate(plain, f"sqlite:///{back}")
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[:-1] == lines[:-1]  # the same rows, digests and next ids
        assert oct(back.stat().st_mode & 0o777) == "0o600"  # it holds every secret

        assert served(tmp_path / "pg", plain, before) == before.seen
    assert served(tmp_path / "sqlite", f"sqlite:///{back}", before) == before.seen


def one_line_refusal(done: subprocess.CompletedProcess[str], words: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("wgmesh-coordinator: "), done.stderr
    assert words in done.stderr, done.stderr


def tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return [r[0] for r in rows]


def test_refusals_are_one_line_and_write_nothing(before: Before, pg_cluster: Cluster, tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copy(before.url.removeprefix("sqlite:///"), old)
    with closing(sqlite3.connect(old)) as conn, conn:
        undo_schema_down_to(conn, 8)
    with pg_cluster.database() as target:
        one_line_refusal(
            migrate(f"sqlite:///{old}", target),
            f"is at schema version 8, this wgmesh's is {SCHEMA_VERSION}: upgrade it first",
        )
        one_line_refusal(migrate(before.url, before.url), "already holds a registry")
        one_line_refusal(migrate(f"sqlite:///{tmp_path / 'none.db'}", target), "no such database file")
        one_line_refusal(migrate(before.url, "mysql://db.example/wgmesh"), "unsupported database 'mysql'")
        one_line_refusal(migrate(before.url, "not a url"), "--to: not a database URL")
        missing = target.replace("?host=", "_missing?host=").replace("wgmesh@", f"wgmesh:{PASSWORD}@")
        unreachable = migrate(before.url, missing)
        one_line_refusal(unreachable, "cannot open database")
        assert PASSWORD not in unreachable.stderr and "wgmesh:***@" in unreachable.stderr
        assert tables(target) == []


def test_a_copy_that_fails_half_way_leaves_the_target_empty(
    before: Before, pg_cluster: Cluster, tmp_path: Path
) -> None:
    source = tmp_path / "nul.db"
    shutil.copy(before.url.removeprefix("sqlite:///"), source)
    with closing(sqlite3.connect(source)) as conn, conn:
        # SQLite holds a NUL in text, PostgreSQL refuses it: the tokens table fails after others copied.
        conn.execute("UPDATE tokens SET description = 'a' || char(0) || 'b' WHERE id = 1")
    with pg_cluster.database() as target:
        done = migrate(f"sqlite:///{source}", target)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and "the copy failed, nothing was written" in done.stderr
        assert tables(target) == []
