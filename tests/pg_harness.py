"""A real PostgreSQL for the tests: a private cluster from Debian's packages in a temporary directory.

initdb refuses to run as root (the tests do), so the cluster belongs to `nobody` and runs under setpriv as
that user. It listens on a unix socket in its own directory (0700, `nobody`'s) and on no TCP port: only
root (the tests) and `nobody` reach it, which is why trust authentication is enough. It is stopped by the
postmaster's PID from postmaster.pid and its directory removed, whether the tests passed or not.

One cluster serves a whole pytest session (tests/conftest.py); each test or module takes a fresh database
(`Cluster.database`), which is quick to create.
"""

from __future__ import annotations

import os
import pwd
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

from wgmesh.lab.timescale import scaled
from wgmesh.lab.wait import NotYet, wait_until

BINDIR = Path(os.environ.get("WGMESH_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
OWNER = "nobody"
SUPERUSER = "wgmesh"
START_BUDGET = 30.0
"""Seconds (reference machine) for initdb plus the first connection: initdb alone takes about 2 s."""
STOP_BUDGET = 15.0

# Made for tests, not for keeping data: a crash loses nothing a test needs afterwards.
SETTINGS = {
    "listen_addresses": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "unix_socket_permissions": "0700",
}


def missing() -> str | None:
    """Why a cluster cannot be started here (what to install), or None."""
    for tool in ("initdb", "postgres", "pg_dump", "pg_restore"):
        if not (BINDIR / tool).exists():
            return f"PostgreSQL is not installed ({BINDIR / tool} is missing; apt-get install postgresql)"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is missing"
    return None


@dataclass
class Cluster:
    """A running private cluster: `url(name)` reaches database `name` over the unix socket."""

    root: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _names: Iterator[int] = field(default_factory=count, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str) -> str:
        """A SQLAlchemy URL of `database` on this cluster, as `wgmesh-coordinator --db` takes it."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string, for psycopg and the PostgreSQL tools (pg_dump, pg_restore)."""
        return f"host={self.socket_dir} user={SUPERUSER} dbname={database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        with psycopg.connect(self.dsn(database), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}"')
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
        return str(BINDIR / name)

    def start(self) -> None:
        user = pwd.getpwnam(OWNER)
        self.socket_dir.mkdir()
        for path in (self.root, self.socket_dir):
            os.chown(path, user.pw_uid, user.pw_gid)
        as_owner = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
        subprocess.run(
            [
                *as_owner,
                self.tool("initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=self.root,
            timeout=scaled(START_BUDGET),
        )
        options = [arg for key, value in SETTINGS.items() for arg in ("-c", f"{key}={value}")]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *as_owner,
                    self.tool("postgres"),
                    "-D",
                    str(self.data),
                    "-k",
                    str(self.socket_dir),
                    *options,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        wait_until(self._ready, START_BUDGET, f"PostgreSQL in {self.root} accepting connections")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                conn.execute(b"SELECT 1")
        except psycopg.OperationalError as exc:
            raise NotYet(str(exc).strip()) from None
        return True

    def postmaster_pid(self) -> int | None:
        """The PID postmaster.pid names (its first line), or None when the server is not running."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

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
