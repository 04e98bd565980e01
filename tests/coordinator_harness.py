"""Harness for the API, CLI and web tests: the real coordinator as a subprocess on 127.0.0.1, driven with
httpx, and the helpers the API tests share. `Api` is what those helpers need; both this `Coordinator` and
`inprocess_harness.InProcessCoordinator` (create_app in the test's interpreter, no process) provide it.

Every coordinator started here is stopped by PID, whether the test passed or not.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from wgmesh import keys, trust
from wgmesh.coordinator import identity
from wgmesh.coordinator.schema import SCHEMA_VERSION
from wgmesh.coordinator.store import Store
from wgmesh.lab.wait import wait_until
from wgmesh.pins import Pin

WAKE_BUDGET = 0.5
"""How soon after a change a held long-poll must answer (the notifier wakes it, nothing polls)."""

ADMIN_TOKEN = "admin-token-0123456789"
ENTRY = "from wgmesh.coordinator.main import main; main()"
START_DEADLINE = 15.0
METRICS_LINE = re.compile(r"event=\"metrics listening\" host=(\S+) port=(\d+)")


def coordinator_command(db: Path | str, *args: str) -> list[str]:
    """The command line of `wgmesh-coordinator --db URL ARGS…`, independent of PATH: a Path is a SQLite
    file, a str a database URL (PostgreSQL, tests/pg_harness.py)."""
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    return [sys.executable, "-c", ENTRY, "--db", url, *args]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api(Protocol):
    """A running coordinator as the API tests use it, in a process or in this interpreter."""

    db: Path
    log: Path
    admin_token: str | None

    @property
    def db_url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def admin(self, token: str | None = None) -> httpx.Client: ...

    def node(self, credential: str) -> httpx.Client: ...

    def anonymous(self) -> httpx.Client: ...

    def scraper(self) -> httpx.Client:
        """A client of the /metrics listener (`--metrics-listen`), apart from the API's."""
        ...


C = TypeVar("C", bound=Api)


class CoordinatorExited(RuntimeError):
    """The coordinator process ended while it should be serving.

    Not an AssertionError: wait_until takes those as "not yet" and would wait out its deadline.
    """


@dataclass
class Started:
    """What a coordinator is started with: its SQLite file (or `database`, a PostgreSQL URL, instead), log
    file, flags and admin token (none: init's)."""

    db: Path
    log: Path
    extra: Sequence[str] = ()
    admin_token: str | None = ADMIN_TOKEN
    database: str | None = None

    @property
    def db_url(self) -> str:
        """The URL of the database it runs on, as `--db` takes it."""
        return self.database or f"sqlite:///{self.db}"


@dataclass
class Coordinator(Started):
    """One coordinator process on a SQLite file."""

    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def insecure(self) -> bool:
        """Started with --insecure-http (plain HTTP for a proxy): no TLS, no pin."""
        return "--insecure-http" in self.extra

    @property
    def url(self) -> str:
        return f"{'http' if self.insecure else 'https'}://127.0.0.1:{self.port}"

    @property
    def pin(self) -> Pin:
        """What clients pin, read as an operator would (`wgmesh-coordinator pin`), not from the server."""
        if "--tls-cert" in self.extra:
            return identity.from_chain(Path(self.extra[list(self.extra).index("--tls-cert") + 1]))
        store = Store(self.db_url)
        try:
            return identity.ensure(store).pin
        finally:
            store.close()

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """How the test clients trust this coordinator: its pin (read once it has started)."""
        if self.insecure:
            return False
        pin = self.pin
        return trust.pinned(lambda: [pin])

    def start(self) -> None:
        """Start on a free port and wait for /healthz; retried when the port was taken meanwhile."""
        assert self.proc is None, "already running"
        env = {k: v for k, v in os.environ.items() if k not in ("WGMESH_ADMIN_TOKEN", "WGMESH_DB")}
        if self.admin_token is not None:
            env["WGMESH_ADMIN_TOKEN"] = self.admin_token
        # Any free port for /metrics unless the test names one: coordinators run side by side here.
        metrics = () if "--metrics-listen" in self.extra else ("--metrics-listen", "127.0.0.1:0")
        for attempt in range(3):
            self.port = free_port()
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    coordinator_command(
                        self.db_url, "--listen", f"127.0.0.1:{self.port}", *self.extra, *metrics
                    ),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            try:
                wait_until(self._healthy, START_DEADLINE, f"{self.url}/healthz")
                return
            except CoordinatorExited:
                self.proc = None
                if attempt == 2 or "address already in use" not in self.log.read_text():
                    raise
            except BaseException:
                self.stop()
                raise

    @property
    def metrics_url(self) -> str:
        """Where this coordinator serves /metrics, as its log says (`metrics listening host=… port=…`)."""
        found = METRICS_LINE.findall(self.log.read_text())
        assert found, f"no metrics listener in the log:\n{self.log.read_text()}"
        host, port = found[-1]
        return f"http://{host}:{port}"

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise CoordinatorExited(
                f"coordinator exited with {self.proc.returncode}:\n{self.log.read_text()}"
            )
        try:
            # Unverified: whether it answers yet (its pin may not exist before its first start); every
            # client the tests use afterwards checks the pin.
            with httpx.Client(base_url=self.url, verify=False, trust_env=False) as client:
                return client.get("/healthz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def admin(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=10.0,
            trust_env=False,
            verify=self.verify,
        )

    def node(self, credential: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {credential}"},
            timeout=10.0,
            trust_env=False,
            verify=self.verify,
        )

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, trust_env=False, verify=self.verify)

    def scraper(self) -> httpx.Client:
        return httpx.Client(base_url=self.metrics_url, timeout=10.0, trust_env=False)


@contextmanager
def running(coordinator: C) -> Iterator[C]:
    coordinator.start()
    try:
        yield coordinator
    finally:
        coordinator.stop()


# --- helpers shared by the API tests ----------------------------------------------------------------------


class SqlConnection(Protocol):
    """A DB-API connection that runs one SQL statement: sqlite3's, or psycopg's for PostgreSQL."""

    def execute(self, sql: str, /) -> object: ...


def undo_schema_4(conn: SqlConnection) -> None:
    """Turn a database this code made into what version 3 wrote: unnamed admin tokens, no audit table.
    (The caller fixes schema_version and undoes the earlier versions.)"""
    conn.execute("DROP INDEX admin_tokens_name")
    for column in ("name", "read_only", "source", "revoked_at"):
        conn.execute(f"ALTER TABLE admin_tokens DROP COLUMN {column}")
    conn.execute("DROP TABLE audit")


SCHEMA_7_COLUMNS = (
    ("routes", "decision"),
    ("routes", "decided_by"),
    ("routes", "decision_reason"),
    ("tokens", "allow_subnets"),
    ("nodes", "allow_subnets"),
    ("networks", "auto_approve"),
)
"""What version 7 (route approval) added."""


def undo_schema_7(conn: SqlConnection) -> None:
    """Turn a database this code made into what version 6 wrote: no route approval columns."""
    for table, column in SCHEMA_7_COLUMNS:
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")


def undo_schema_9(conn: SqlConnection) -> None:
    """Turn a database this code made into what version 8 wrote: no key rotation, no replacing tokens."""
    conn.execute("ALTER TABLE nodes DROP COLUMN rotate_requested_at")
    conn.execute("ALTER TABLE tokens DROP COLUMN replaces")


def undo_schema_10(conn: SqlConnection) -> None:
    """Turn a database this code made into what version 9 wrote: dashboard sessions in memory, no table."""
    conn.execute("DROP TABLE sessions")


def undo_schema_13(conn: SqlConnection) -> None:
    """Turn a database this code made into what version 12 wrote: no aliases, no alias pool."""
    conn.execute("ALTER TABLE routes DROP COLUMN alias")
    conn.execute("ALTER TABLE routes DROP COLUMN alias_by")
    conn.execute("ALTER TABLE networks DROP COLUMN alias_pool")


def undo_schema_12(conn: SqlConnection) -> None:
    """Turn a database this code made into what version 11 wrote: nodes without a site."""
    conn.execute("ALTER TABLE nodes DROP COLUMN site")


def undo_schema_11(conn: SqlConnection) -> None:
    """Turn a database this code made into what version 10 wrote: tokens that do not name their node."""
    conn.execute("ALTER TABLE tokens DROP COLUMN enrolled_node")
    conn.execute("ALTER TABLE tokens DROP COLUMN enrolled_at")


def undo_schema_down_to(conn: SqlConnection, version: int) -> None:
    """Turn a database this code made into what `version` (at least 2) wrote, its version rows included:
    each later version undone, newest first."""
    undo: dict[int, Sequence[str | Callable[[SqlConnection], None]]] = {
        14: ("ALTER TABLE nodes DROP COLUMN tcp_port", "ALTER TABLE nodes DROP COLUMN tcp_pin"),
        13: (undo_schema_13,),
        12: (undo_schema_12,),
        11: (undo_schema_11,),
        10: (undo_schema_10,),
        9: (undo_schema_9,),
        8: ("DROP TABLE relay_revocations",),
        7: (undo_schema_7,),
        6: tuple(
            f"ALTER TABLE registry DROP COLUMN {c}"
            for c in ("tls_key", "tls_cert", "tls_next_key", "tls_next_cert")
        ),
        5: ("ALTER TABLE registry DROP COLUMN relay_tls_key",),
        4: (undo_schema_4,),
        3: (
            "ALTER TABLE networks DROP COLUMN mtu",
            "ALTER TABLE nodes DROP COLUMN mtu",
            "ALTER TABLE nodes DROP COLUMN max_mtu",
        ),
    }
    assert set(undo) == set(range(3, SCHEMA_VERSION + 1)), "a new schema version needs its undo here"
    for step in range(SCHEMA_VERSION, version, -1):
        for statement in undo[step]:
            if isinstance(statement, str):
                conn.execute(statement)
            else:
                statement(conn)
    # A database made at the current version holds that one row; an old one held a row per version.
    conn.execute("DELETE FROM schema_version")
    rows = ", ".join(f"({v}, '2026-11-{v:02d} 00:00:00')" for v in range(1, version + 1))
    conn.execute(f"INSERT INTO schema_version (version, applied_at) VALUES {rows}")


@dataclass
class Enrolled:
    """A node enrolled through the API, with the key pair it generated itself."""

    name: str
    node_id: int
    credential: str
    keypair: keys.KeyPair
    first_netmap: dict[str, Any]


def routes_by_key(admin: httpx.Client) -> dict[tuple[str, str], dict[str, Any]]:
    """Every route with its verdict, by (prefix, gateway)."""
    r = admin.get("/api/v1/routes")
    assert r.status_code == 200, r.text
    return {(x["prefix"], x["gateway"]): x for x in r.json()["routes"]}


def create_token(admin: httpx.Client, **body: Any) -> dict[str, Any]:
    r = admin.post("/api/v1/tokens", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def enroll_body(token: str, name: str, **fields: Any) -> dict[str, Any]:
    return {"token": token, "name": name, "public_key": keys.generate_keypair().public_key, **fields}


def enroll(client: httpx.Client, token: str, name: str, **fields: Any) -> Enrolled:
    pair = keys.generate_keypair()
    body = {"token": token, "name": name, "public_key": pair.public_key, **fields}
    r = client.post("/api/v1/enroll", json=body)
    assert r.status_code == 201, r.text
    data = r.json()
    return Enrolled(name, data["node_id"], data["credential"], pair, data["netmap"])


def netmap(coordinator: Api, node: Enrolled, **params: Any) -> dict[str, Any]:
    with coordinator.node(node.credential) as client:
        r = client.get("/api/v1/netmap", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def peers_by_name(nm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in nm["peers"]}


def version(client: httpx.Client) -> int:
    r = client.get("/healthz")
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    """The response is an error with this status in the one error shape; returns the error object."""
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message"}, body
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, body
    return dict(error)


def state(admin: httpx.Client) -> dict[str, Any]:
    """Everything a refused request must leave alone: nodes, routes, tokens, pairs, the version."""
    out: dict[str, Any] = {"version": version(admin)}
    for path in ("/api/v1/nodes", "/api/v1/routes", "/api/v1/tokens", "/api/v1/pairs", "/api/v1/network"):
        r = admin.get(path)
        assert r.status_code == 200, r.text
        out[path] = r.json()
    for n in out["/api/v1/nodes"]["nodes"]:
        n.pop("online")  # derived from the clock, not stored
    return out


@contextmanager
def unchanged(admin: httpx.Client) -> Iterator[None]:
    """Assert that the block changes nothing the API can show."""
    before = state(admin)
    yield
    assert state(admin) == before


HOSTILE = ("\x1b[31m", "\x1b]0;x\x07", "\r")
"""Text that drives a terminal (colour, window title with BEL, carriage return): what the API refuses."""
SHOWN = ("\\x1b[31m", "\\x1b]0;x\\x07", "\\r")
"""The same as every place that shows text writes it (wgmesh.printable.escape, the dashboard's `visible`)."""


def hostile(text: str) -> str:
    """`text` with every HOSTILE sequence in it."""
    return f"{HOSTILE[0]}{text}{HOSTILE[1]}x{HOSTILE[2]}"


def write_report(db: Path, node_id: int, report: dict[str, Any]) -> None:
    """Overwrite a node's stored status report with SQL, unvalidated, as an older version could have."""
    with closing(sqlite3.connect(db)) as conn, conn:
        found = conn.execute("UPDATE status SET report = ? WHERE node_id = ?", (json.dumps(report), node_id))
        assert found.rowcount == 1, f"node {node_id} has no stored report"


def post_status(coordinator: Api, node: Enrolled, body: dict[str, Any]) -> dict[str, Any]:
    """Send a status report as `node` (POST /api/v1/status with its credential)."""
    with coordinator.node(node.credential) as client:
        r = client.post("/api/v1/status", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())
