"""The coordinator's database holds the master secret and static peers' private keys: it and its -wal and
-shm files are 0600 whatever the umask, `wgmesh-coordinator init` run by hand included, and a database an
older version left readable by others is tightened when the coordinator opens it."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coordinator_harness import Coordinator, coordinator_command, create_token, running


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """The test process's umask, which the processes it starts inherit."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sqlite_files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def test_init_by_hand_under_umask_022_creates_the_database_0600(tmp_path: Path) -> None:
    db = tmp_path / "coordinator.db"
    env = {k: v for k, v in os.environ.items() if k != "WGMESH_ADMIN_TOKEN"}
    with umask(0o022):
        done = subprocess.run(
            coordinator_command(db, "init"), check=False, capture_output=True, text=True, env=env, timeout=60
        )
    assert done.returncode == 0, done.stderr
    assert mode(db) == 0o600
    assert not [p for p in sqlite_files(db)[1:] if p.exists() and mode(p) != 0o600]


def test_a_serving_coordinator_keeps_the_database_wal_and_shm_0600(tmp_path: Path) -> None:
    db = tmp_path / "coordinator.db"
    with umask(0o022), running(Coordinator(db=db, log=tmp_path / "c.log")) as c, c.admin() as admin:
        create_token(admin)  # a write: the -wal file has content
        files = sqlite_files(db)
        assert all(p.exists() for p in files), list(tmp_path.iterdir())
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_a_database_left_readable_by_others_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "coordinator.db"
    with running(Coordinator(db=db, log=tmp_path / "c.log")):
        pass
    db.chmod(0o644)  # as a coordinator before this change created it under umask 022
    with running(Coordinator(db=db, log=tmp_path / "c.log")) as c:
        assert mode(db) == 0o600
        assert "secret file was readable by others: tightened" in c.log.read_text()
