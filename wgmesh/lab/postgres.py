"""A private PostgreSQL cluster from Debian's packages: the lab's shared database, and the tests'.

initdb refuses to run as root (the lab and the tests do), so the cluster belongs to an unprivileged user
(`nobody`) and runs under setpriv as that user. It listens on a unix socket in its own directory (0700,
the owner's) and on no TCP port: only root and the owner reach it, which is why trust authentication is
enough. It is made for a lab or a test run, not for keeping data: fsync is off.

`ClusterPaths` is the pure part (directories, command lines, URLs); `initdb`, `ready` and `create_database`
touch the machine. Who runs the postmaster (a detached lab process, a test's child) is the caller's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from wgmesh.errors import WgmeshError
from wgmesh.lab.timescale import scaled
from wgmesh.lab.wait import NotYet

BINDIR = Path(os.environ.get("WGMESH_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
OWNER = "nobody"
SUPERUSER = "wgmesh"
INITDB_BUDGET = 30.0
"""Seconds (reference machine) for initdb, which takes about 2 s."""

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


def tool(name: str) -> str:
    """The path of a PostgreSQL program (initdb, postgres, pg_dump, …)."""
    return str(BINDIR / name)


def as_owner() -> list[str]:
    """The setpriv prefix that runs a command as the cluster's owner."""
    user = pwd.getpwnam(OWNER)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]


@dataclass(frozen=True)
class ClusterPaths:
    """Where a cluster lives under `root`, and how to start and reach it."""

    root: Path

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
        """A SQLAlchemy URL of `database`, as `wgmesh-coordinator --db` takes it."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string, for psycopg and the PostgreSQL tools."""
        return f"host={self.socket_dir} user={SUPERUSER} dbname={database}"

    def initialised(self) -> bool:
        """Whether initdb has made the data directory."""
        return (self.data / "PG_VERSION").exists()

    def initdb_argv(self) -> list[str]:
        """initdb of the data directory, as the owner, without syncing (nothing here is kept)."""
        return [
            *as_owner(),
            tool("initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]

    def postgres_argv(self) -> list[str]:
        """The postmaster, as the owner, on the unix socket only."""
        options = [arg for key, value in SETTINGS.items() for arg in ("-c", f"{key}={value}")]
        return [*as_owner(), tool("postgres"), "-D", str(self.data), "-k", str(self.socket_dir), *options]

    def runs(self, cmdline: list[str]) -> bool:
        """Whether a process's command line is this cluster's postmaster (postgres on this data directory)."""
        return bool(cmdline) and Path(cmdline[0]).name == "postgres" and str(self.data) in cmdline

    def postmaster_pid(self) -> int | None:
        """The PID postmaster.pid names (its first line), or None when the server is not running."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None


def initdb(paths: ClusterPaths) -> None:
    """Make the root and socket directories (the owner's) and the data directory, once."""
    user = pwd.getpwnam(OWNER)
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.socket_dir.mkdir(mode=0o700, exist_ok=True)
    for path in (paths.root, paths.socket_dir):
        os.chown(path, user.pw_uid, user.pw_gid)
    if not paths.initialised():
        # subprocess itself, not lab.system's runner: the layout imports this module for its URLs, and
        # the runner imports the layout.
        try:
            subprocess.run(
                paths.initdb_argv(),
                check=True,
                capture_output=True,
                text=True,
                cwd=paths.root,
                timeout=scaled(INITDB_BUDGET),
            )
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout).strip().replace("\n", "; ")
            raise WgmeshError(f"initdb failed: {detail}", code="command_failed") from exc
        except subprocess.TimeoutExpired as exc:
            raise WgmeshError(f"initdb did not finish in {scaled(INITDB_BUDGET):g}s", code="timeout") from exc


def ready(paths: ClusterPaths) -> bool:
    """True once the server accepts connections; NotYet (for wait_until) until then."""
    import psycopg  # noqa: PLC0415 - only a PostgreSQL lab needs it, not every `wgmesh` command

    try:
        with psycopg.connect(paths.dsn(), connect_timeout=2) as conn:
            conn.execute(b"SELECT 1")
    except psycopg.OperationalError as exc:
        raise NotYet(str(exc).strip()) from None
    return True


def create_database(paths: ClusterPaths, name: str, *, exist_ok: bool = False) -> str:
    """Create database `name` (outside a transaction, as CREATE DATABASE needs); returns its URL."""
    import psycopg  # noqa: PLC0415 - as in ready()

    if not name.isidentifier():
        raise WgmeshError(f"database name {name!r} is not a plain identifier", code="invalid_database")
    with psycopg.connect(paths.dsn(), autocommit=True) as conn:
        found = conn.execute(b"SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if found is None:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        elif not exist_ok:
            raise WgmeshError(f"database {name} exists already", code="database_exists")
    return paths.url(name)
