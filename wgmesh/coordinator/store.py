"""Database access for the coordinator: engine set-up, schema life cycle and transactions."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic_core
from sqlalchemy import Connection, Engine, create_engine, event, func, insert, inspect, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

from wgmesh.coordinator import schema
from wgmesh.errors import StoreError, ValidationError
from wgmesh.logs import kv
from wgmesh.models import Network
from wgmesh.secure_files import create_private

if TYPE_CHECKING:
    import psycopg

ChangeListener = Callable[[int], None]
log = logging.getLogger("wgmesh.coordinator")

UNAVAILABLE = "database_unavailable"
"""The code of the 503 a coordinator answers while its database is out of reach."""
RETRY_AFTER = 5
"""The `Retry-After` seconds of that answer: about what a PostgreSQL restart or failover takes."""

CHANGES_CHANNEL = "wgmesh_changes"
"""The PostgreSQL NOTIFY channel a committed write announces its registry version on (listener.py)."""
INIT_LOCK_KEY = 0x77676D7368_00
"""The advisory lock initialisation takes ("wgmsh", 0; the sweeps' is job 1)."""


POOL_SIZE = 10
POOL_OVERFLOW = 50
"""Connections kept, and the most made beyond them on SQLite: together above the 56 worker threads
requests run in (anyio's default 40, and the reports' and netmaps' lanes of 8 each: operations.py), so
a request never waits for one (SQLite connections are a file handle each)."""
PG_POOL_OVERFLOW = 20
"""On PostgreSQL at most 30 per coordinator, so that three fit in its default max_connections (100) with
their LISTEN connections; a request beyond them waits for one (POOL_WAIT) rather than fail."""
IN_CHUNK = 500
"""Ids per `IN (...)` query: well under SQLite's limit of bound variables."""
VERSION_TRUST = 1.0
"""Seconds a registry version learnt here (read, committed, or heard from another coordinator) answers
`version(max_age=…)` without the database: a thousand long-polls woken by one change each look it up.
Every change committed here or heard (Store.heard) is learnt at once; only a change made behind the
coordinator's back (an offline command on its SQLite file, a PostgreSQL listener down) waits this long."""
POOL_WAIT = 300
"""Seconds a request waits for a pooled connection before failing: a queue, never a refusal under load."""


def _json_text(value: object) -> str:
    """JSON columns written by pydantic-core (in Rust): a status report of 1,000 peers took 12 ms through
    the json module, and a pydantic model (a report) is written as its JSON form directly."""
    return pydantic_core.to_json(value).decode()


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every one we store is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Take transaction control from pysqlite so that BEGIN is emitted by SQLAlchemy, reads included.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _private_files(db: Path) -> Callable[..., None]:
    """Before each connection: the database file exists 0600 (SQLite would create it 0644 under umask 022,
    and it holds the master secret and static peers' private keys), and so do its -wal and -shm files,
    which SQLite creates with the database's mode; files an older version left looser are tightened."""

    def before_connect(*_args: Any) -> None:
        create_private(db)
        for side in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            if side.exists():
                create_private(side)

    return before_connect


IMMEDIATE = "wgmesh_immediate"
"""Execution option of a SQLite write transaction: BEGIN IMMEDIATE, the write lock taken up front."""


def _sqlite_begin(conn: Connection) -> None:
    # A deferred BEGIN that reads, then writes, must upgrade its lock; when another connection wrote
    # meanwhile SQLite answers SQLITE_BUSY at once, without waiting out busy_timeout ("database is
    # locked", a 500). Taking the write lock at BEGIN makes a writer wait its turn instead.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(IMMEDIATE) else "BEGIN")


def redacted(url: str) -> str:
    """`url` fit for a log or a terminal: a password in it shown as ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(a database URL that does not parse)"


def make_engine(url: str) -> Engine:
    """An engine for a `sqlite:///PATH` or `postgresql://…` URL."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        # Not echoed: it may hold a password.
        raise ValidationError(
            "the database URL is not valid: use sqlite:///PATH or postgresql://…", code="invalid_db_url"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            directory = os.path.dirname(os.path.abspath(parsed.database))
            if not os.path.isdir(directory):
                raise StoreError(f"directory {directory} for the database does not exist")
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": 30},
            # Every request thread may hold one (reads never wait in WAL mode), and waiting for a pooled
            # connection never ends in an error: a burst is served late, not refused.
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
            pool_timeout=POOL_WAIT,
            json_serializer=_json_text,
            json_deserializer=pydantic_core.from_json,
        )
        if parsed.database and parsed.database != ":memory:":
            event.listen(engine, "do_connect", _private_files(Path(parsed.database)))
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed,
            pool_pre_ping=True,
            pool_size=POOL_SIZE,
            max_overflow=PG_POOL_OVERFLOW,
            pool_timeout=POOL_WAIT,
            json_serializer=_json_text,
            json_deserializer=pydantic_core.from_json,
        )
    raise ValidationError(
        f"unsupported database {parsed.get_backend_name()!r}: use sqlite:///PATH or postgresql://…",
        code="invalid_db_url",
    )


def snapshot_engine(engine: Engine) -> Engine:
    """The engine read transactions use: one snapshot for all their statements.

    SQLite's read transaction is one already. PostgreSQL's default, READ COMMITTED, takes a new snapshot
    per statement: a netmap could mix a version with nodes written after it. REPEATABLE READ gives the
    snapshot; writers stay at READ COMMITTED, where the version bump's row lock orders them and each
    statement after it sees what the writer before committed.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return engine


def schema_found(conn: Connection) -> int:
    """The schema version the database holds (0: none recorded)."""
    return max(conn.execute(select(schema.schema_version.c.version)).scalars().all(), default=0)


@dataclass
class Writer:
    """A write transaction: `version` is the registry version this transaction produces."""

    conn: Connection
    version: int


class Store:
    """The coordinator's database: schema life cycle plus read and write transactions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._reader = snapshot_engine(self.engine)
        self._listeners: list[ChangeListener] = []
        self._write_turn = threading.RLock()
        """SQLite: one writer at a time in this process, in turn; SQLite allows one at a time anyway, and
        without the turn, writers would wait in busy_timeout's sleeps of up to 100 ms."""
        self.available = True
        """False from a failed use of a shared database until the next one that works (one log line each)."""
        self._version_lock = threading.Lock()
        self._version_known: tuple[int, float] | None = None
        """The registry version and when (monotonic) it was known to be current: when the read that found
        it began, or when its commit or notification came."""
        self._version_floor = 0.0
        """Versions known from before this (monotonic) are not taken: a change was heard then."""

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def on_change(self, listener: ChangeListener) -> None:
        """Call `listener(version)` after every committed write."""
        self._listeners.append(listener)

    def is_initialised(self) -> bool:
        """Whether the schema exists."""
        try:
            return inspect(self.engine).has_table("schema_version")
        except OperationalError as exc:
            raise StoreError(f"cannot open database: {exc.orig}") from exc

    def create(self, network: Network) -> None:
        """Create the schema and the network (no-op for an already initialised database).

        On PostgreSQL, coordinators initialising one empty database at the same moment take turns (an
        advisory lock held by the creating transaction, whose DDL commits with it): the second finds the
        schema made and leaves it.
        """
        if self.is_initialised():
            self.check_schema()
            return
        with self.engine.begin() as conn:
            made_elsewhere = False
            if self.engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INIT_LOCK_KEY})
                made_elsewhere = inspect(conn).has_table("schema_version")
            if not made_elsewhere:
                schema.metadata.create_all(conn)
                conn.execute(
                    insert(schema.schema_version).values(version=schema.SCHEMA_VERSION, applied_at=utcnow())
                )
                conn.execute(insert(schema.registry).values(id=1, version=1, psk_master=os.urandom(32)))
                conn.execute(
                    insert(schema.networks).values(
                        id=1,
                        name=network.name,
                        overlay_cidr=str(network.overlay_cidr),  # the table holds canonical text
                        p2p=network.p2p,
                        listen_port=network.listen_port,
                        mtu=network.mtu,
                        auto_approve=[str(p) for p in network.auto_approve],
                    )
                )
        if made_elsewhere:
            self.check_schema()

    def upgrade(self) -> list[int]:
        """Apply the migrations from the database's schema version to this code's; returns those applied.

        Each step runs in its own transaction together with its version row, so a failed step leaves the
        database at the previous version, and coordinators starting together apply a step once.
        """
        url = self.engine.url
        if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
            return []  # nothing to upgrade, and looking would create the file
        if not self.is_initialised():
            return []
        with self.engine.connect() as conn:
            if schema_found(conn) >= schema.SCHEMA_VERSION:
                return []  # the usual start: no lock taken
        applied: list[int] = []
        while True:
            with self.engine.begin() as conn:
                # Serialises coordinators upgrading at once: the second waits here, then finds the new
                # version. It is the first statement: after a read, SQLite answers a waiting writer
                # "database is locked". It locks a row of the one table no step alters: a waiter holding
                # a lock on the registry (as the version bump would) deadlocks step 5's ALTER TABLE on
                # PostgreSQL. And one row, the first version's (never removed): several could deadlock.
                sv = schema.schema_version
                first = select(func.min(sv.c.version)).scalar_subquery()
                conn.execute(update(sv).where(sv.c.version == first).values(applied_at=sv.c.applied_at))
                found = schema_found(conn)
                step = found + 1
                if found >= schema.SCHEMA_VERSION or step not in schema.MIGRATIONS:
                    return applied
                for statement in schema.MIGRATIONS[step]:
                    if isinstance(statement, str):
                        conn.execute(text(statement))
                    else:
                        statement(conn)
                conn.execute(insert(schema.schema_version).values(version=step, applied_at=utcnow()))
            applied.append(step)

    def check_schema(self) -> None:
        """Raise StoreError unless the database holds the schema version this code speaks."""
        if not self.is_initialised():
            raise StoreError("the database is not initialised: run 'wgmesh-coordinator init' first")
        with self.engine.connect() as conn:
            found = schema_found(conn)
        if found != schema.SCHEMA_VERSION:
            raise StoreError(f"database schema version {found} does not match {schema.SCHEMA_VERSION}")

    @contextmanager
    def reaching(self) -> Iterator[None]:
        """Turn a lost database server (PostgreSQL stopped, connections refused or ended) into StoreError
        `database_unavailable`, and log the loss and the recovery once each. A SQLite file has no server
        to lose: its errors stay what they were."""
        if not self.shared:
            yield
            return
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            if self.available:
                self.available = False
                reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0:1]
                log.error(
                    "database unavailable: serving long-polls from memory, refusing writes",
                    extra=kv(db=redacted(self.url), error=reason[0] if reason else type(exc).__name__),
                )
            raise StoreError(
                "the coordinator's database is unavailable: it serves netmaps from memory and refuses "
                "changes until the database is back",
                code=UNAVAILABLE,
            ) from exc
        if not self.available:
            self.available = True
            log.info("database available again", extra=kv(db=redacted(self.url)))

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction with a consistent view (one snapshot for all its statements)."""
        with self.reaching(), self._reader.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self, *, bump: bool = True) -> Iterator[Writer]:
        """A write transaction; with `bump` it first raises the registry version, which also
        serialises concurrent writers, and listeners hear the new version after the commit."""
        with self._turn(), self.reaching(), self.engine.connect() as base:
            conn = base.execution_options(**{IMMEDIATE: True}) if not self.shared else base
            transaction = conn.begin()
            try:
                version = 0
                if bump:
                    conn.execute(update(schema.registry).values(version=schema.registry.c.version + 1))
                    version = int(conn.execute(select(schema.registry.c.version)).scalar_one())
                    self.announce(conn, version)
                yield Writer(conn, version)
            except BaseException:
                transaction.rollback()
                raise
            try:
                transaction.commit()
            except (OperationalError, InterfaceError) as exc:
                # Not `database_unavailable`: the commit may have landed, so a client must not send the
                # write again elsewhere as one that surely did nothing (api_client.UNSENT_CODES).
                raise StoreError(
                    "the database was lost while committing: the change may or may not have been made",
                    code="commit_unknown",
                ) from exc
        if bump:
            self._learn(version, time.monotonic())
            for listener in self._listeners:
                listener(version)

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's write turn on SQLite (PostgreSQL orders writers itself: the version row lock)."""
        if self.shared:
            yield
            return
        with self._write_turn:
            yield

    def announce(self, conn: Connection, version: int) -> None:
        """Tell every coordinator of a shared database that `version` (0: something that is not a registry
        change, such as ended sessions) was committed: a NOTIFY in the writing transaction, which
        PostgreSQL delivers to every listener (listener.py) only if the transaction commits. The payload is
        the number, nothing secret. Nothing on SQLite, where on_change reaches the one coordinator."""
        if self.shared:
            conn.execute(
                text("SELECT pg_notify(:channel, :version)"),
                {"channel": CHANGES_CHANNEL, "version": str(version)},
            )

    @property
    def shared(self) -> bool:
        """Whether other coordinators may use this database too (PostgreSQL), so that changes and jobs
        must be coordinated through it; a SQLite file has one coordinator."""
        return self.engine.dialect.name == "postgresql"

    def dedicated(self) -> psycopg.Connection[Any]:
        """A psycopg connection of its own, outside the pool, in autocommit (LISTEN, advisory locks):
        made from the engine's URL exactly as the pool's are. PostgreSQL only."""
        import psycopg  # noqa: PLC0415 - only a PostgreSQL store needs it

        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        # TCP keepalives: a LISTEN connection cut without a reset (a dead server, a dropped NAT entry)
        # otherwise gives no error, and the listener would hear nothing, unaware, until a restart.
        alive = {"keepalives": 1, "keepalives_idle": 15, "keepalives_interval": 5, "keepalives_count": 3}
        return psycopg.connect(*cargs, **{**alive, **cparams, "autocommit": True, "connect_timeout": 5})

    def version(self, *, max_age: float = 0.0) -> int:
        """The current registry version; with `max_age`, the one learnt here at most that many seconds ago
        if nothing was heard since (VERSION_TRUST)."""
        known = self.version_known(max_age)
        if known is not None:
            return known
        began = time.monotonic()
        with self.reaching(), self.engine.connect() as conn:
            version = int(conn.execute(select(schema.registry.c.version)).scalar_one())
        self._learn(version, began)
        return version

    def version_known(self, max_age: float) -> int | None:
        """The version learnt here at most `max_age` seconds ago, if nothing was heard since; None
        otherwise (`version` would ask the database)."""
        known = self._version_known
        return known[0] if known is not None and time.monotonic() - known[1] <= max_age else None

    def heard(self, version: int) -> None:
        """A coordinator committed `version` (its NOTIFY); 0: not a version (a sweep's) or whatever the
        listener missed while it reconnected, so the version is asked of the database next time."""
        now = time.monotonic()
        if version:
            known = self._version_known
            if known is not None and version < known[0]:
                return  # a notification that crossed a newer commit of this coordinator's
            self._learn(version, now)
            return
        with self._version_lock:
            self._version_known, self._version_floor = None, now

    def _learn(self, version: int, at: float) -> None:
        # Only what is newer than what is known: a read that began before a commit (or a notification)
        # may end after it with the version before, which must not overwrite the newer one.
        with self._version_lock:
            known = self._version_known
            if at >= self._version_floor and (known is None or at > known[1]):
                self._version_known = (version, at)
