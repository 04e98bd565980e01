"""A real PostgreSQL for the tests: a private cluster (wgmesh.lab.postgres, as the lab runs one) in a
temporary directory, run as a child of the test session.

It is stopped by the postmaster's PID from postmaster.pid and its directory removed, whether the tests
passed or not. One cluster serves a whole pytest session (tests/conftest.py); each test or module takes a
fresh database (`Cluster.database`), which is quick to create.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import psycopg

from wgmesh.lab import postgres
from wgmesh.lab.postgres import SUPERUSER, ClusterPaths, missing
from wgmesh.lab.timescale import scaled
from wgmesh.lab.wait import wait_until

__all__ = ["SUPERUSER", "Cluster", "missing", "running_cluster"]

START_BUDGET = 30.0
"""Seconds (reference machine) for the server to accept its first connection after initdb."""
STOP_BUDGET = 15.0


@dataclass
class Cluster:
    """A running private cluster: `url(name)` reaches database `name` over the unix socket."""

    root: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _names: Iterator[int] = field(default_factory=count, repr=False)

    @property
    def paths(self) -> ClusterPaths:
        return ClusterPaths(self.root)

    @property
    def data(self) -> Path:
        return self.paths.data

    @property
    def socket_dir(self) -> Path:
        return self.paths.socket_dir

    @property
    def log(self) -> Path:
        return self.paths.log

    def url(self, database: str) -> str:
        """A SQLAlchemy URL of `database` on this cluster, as `wgmesh-coordinator --db` takes it."""
        return self.paths.url(database)

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string, for psycopg and the PostgreSQL tools (pg_dump, pg_restore)."""
        return self.paths.dsn(database)

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        with psycopg.connect(self.dsn(database), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        postgres.create_database(self.paths, name)
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: a coordinator's pool a test left open must not keep the database alive.
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh database for the block; yields its URL and drops it afterwards."""
        name = self.create_database()
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)

    def tool(self, name: str) -> str:
        """The path of a PostgreSQL program of this cluster's version (pg_dump, pg_restore, …)."""
        return postgres.tool(name)

    def start(self) -> None:
        postgres.initdb(self.paths)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.paths.postgres_argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )
        wait_until(self._ready, START_BUDGET, f"PostgreSQL in {self.root} accepting connections")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log.read_text()}")
        return postgres.ready(self.paths)

    def postmaster_pid(self) -> int | None:
        """The PID postmaster.pid names (its first line), or None when the server is not running."""
        return self.paths.postmaster_pid()

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the postmaster by its PID, SIGKILL if it lingers; then remove it all."""
        try:
            pid = self.postmaster_pid()
            if pid is not None and self.proc is not None and pid == self.proc.pid:
                os.kill(pid, signal.SIGINT)
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=scaled(STOP_BUDGET))
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=scaled(STOP_BUDGET))
        finally:
            self.proc = None
            shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A private cluster for the block, stopped and removed afterwards however the block ends."""
    started = time.monotonic()
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="wgmesh-pg-")))
    try:
        cluster.start()
        print(f"PostgreSQL cluster ready in {time.monotonic() - started:.1f} s")
        yield cluster
    finally:
        cluster.stop()
