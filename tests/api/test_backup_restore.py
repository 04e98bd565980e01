"""The backup and restore steps of docs/deploy.md (section 7), run as written: a coordinator on the
restored database presents the same pin and serves the same netmaps to the same credentials."""

from __future__ import annotations

import subprocess
from pathlib import Path

from full_registry import fill, served
from pg_harness import SUPERUSER, Cluster

from wgmesh.coordinator import migrate


def sh(script: str, *args: str | Path) -> None:
    """Run `script` as an operator's shell would, with "$1"… bound to `args`."""
    done = subprocess.run(
        ["sh", "-c", script, "sh", *map(str, args)], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_sqlite_backup_and_restore(tmp_path: Path) -> None:
    (tmp_path / "live").mkdir()
    before = fill(tmp_path / "live")
    live = before.url.removeprefix("sqlite:///")
    backup = tmp_path / "wgmesh-backup.db"
    sh("""umask 077 && sqlite3 "$1" ".backup '$2'" """, live, backup)
    assert oct(backup.stat().st_mode & 0o777) == "0o600"  # it holds every secret
    restored = tmp_path / "new-node" / "coordinator.db"
    restored.parent.mkdir()
    sh('install -m 600 "$1" "$2"', backup, restored)
    assert served(tmp_path / "after", f"sqlite:///{restored}", before) == before.seen


def test_postgresql_dump_and_restore(tmp_path: Path, pg_cluster: Cluster) -> None:
    (tmp_path / "live").mkdir()
    before = fill(tmp_path / "live")
    dump = tmp_path / "wgmesh-backup.dump"
    with pg_cluster.database() as live:
        migrate.migrate(before.url, live)  # the registry on PostgreSQL (test_migrate: it serves the same)
        sh('umask 077 && "$1" -Fc -f "$2" "$3"', pg_cluster.tool("pg_dump"), dump, live)
    assert oct(dump.stat().st_mode & 0o777) == "0o600"
    # The live database is gone; a new, empty one takes the dump.
    name = "restored"
    sh('"$1" -h "$2" -U "$3" "$4"', pg_cluster.tool("createdb"), pg_cluster.socket_dir, SUPERUSER, name)
    try:
        url = pg_cluster.url(name)
        sh('"$1" --no-owner -d "$2" "$3"', pg_cluster.tool("pg_restore"), url, dump)
        assert served(tmp_path / "after", url, before) == before.seen
    finally:
        pg_cluster.drop_database(name)
