"""`wgmesh-coordinator migrate`: copy a registry from one database to another (SQLite ↔ PostgreSQL).

Every table of the schema is copied with its ids, in one transaction on the target: a failure leaves it
as empty as it was. Ids are never reused (a deleted node's id stays revoked for relays), so each id
sequence of the target is moved past the source's. The copy is checked before it is committed: row
counts and a digest of every table's rows, read back from the target, against what was read from the
source (one snapshot of it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, func, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from wgmesh.coordinator import schema
from wgmesh.coordinator.store import Store, redacted, schema_found
from wgmesh.errors import StoreError, ValidationError

BATCH = 1000
"""Rows per INSERT: few round trips, bounded statement size."""


@dataclass(frozen=True)
class Copied:
    """One table as copied: its rows, the digest both sides agree on, the next id it hands out."""

    table: str
    rows: int
    digest: str
    next_id: int | None  # tables whose ids come from a sequence; None for the others


def _open(url: str, role: str) -> Store:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValidationError(f"--{role}: not a database URL", code="invalid_db_url") from None
    # Opening a SQLite file that is not there would create it.
    missing = parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file()
    if role == "from" and missing:
        raise ValidationError(f"--from {redacted(url)}: no such database file", code="invalid_db_url")
    try:
        store = Store(url)
        store.is_initialised()  # connects: an unreachable database is refused here, before any write
    except (ValidationError, StoreError) as exc:
        raise ValidationError(f"--{role} {redacted(url)}: {exc.message}", code="invalid_db_url") from None
    return store


def _check_source(store: Store) -> None:
    if not store.is_initialised():
        raise ValidationError(f"--from {redacted(store.url)} holds no registry", code="invalid_source")
    with store.read() as conn:
        found = schema_found(conn)
    if found != schema.SCHEMA_VERSION:
        raise ValidationError(
            f"--from {redacted(store.url)} is at schema version {found}, this wgmesh's is "
            f"{schema.SCHEMA_VERSION}: upgrade it first (start this version's coordinator on it once)",
            code="schema_mismatch",
        )


def _check_target(store: Store) -> None:
    present = set(inspect(store.engine).get_table_names()) & set(schema.metadata.tables)
    if "registry" in present:
        with store.read() as conn:
            if conn.execute(select(func.count()).select_from(schema.registry)).scalar_one():
                raise ValidationError(
                    f"--to {redacted(store.url)} already holds a registry: give an empty database",
                    code="target_not_empty",
                )
    if present:
        raise ValidationError(
            f"--to {redacted(store.url)} is not empty (it has table {sorted(present)[0]}): "
            "give an empty database",
            code="target_not_empty",
        )


def _utc(value: datetime) -> datetime:
    """`value` in UTC; a naive one (SQLite's) is UTC already, as every time stored is."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def canonical(value: Any) -> Any:
    """A column value in one form on both backends: times in UTC (SQLite hands back naive ones, and
    PostgreSQL aware ones in the session's zone), bytes as hex, JSON as sorted text."""
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def _for_insert(row: Mapping[str, Any]) -> dict[str, Any]:
    # Times go in aware and in UTC: PostgreSQL would read a naive one in its session's zone, and SQLite
    # stores an aware one's wall-clock time.
    return {k: _utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _rows(conn: Connection, table: Table) -> list[dict[str, Any]]:
    order = list(table.primary_key.columns)
    return [dict(r) for r in conn.execute(select(table).order_by(*order)).mappings()]


def _digest(rows: Sequence[Mapping[str, Any]]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps({k: canonical(v) for k, v in row.items()}, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def _sequenced(table: Table) -> bool:
    """Tables whose ids come from a sequence and are never reused (SQLite's AUTOINCREMENT)."""
    return bool(table.kwargs.get("sqlite_autoincrement"))


def _high_water(conn: Connection, table: Table) -> int:
    """The largest id the table's sequence has handed out (0: none)."""
    if conn.dialect.name == "postgresql":
        found = conn.execute(
            text(
                "SELECT last_value FROM pg_sequences WHERE quote_ident(schemaname) || '.' || "
                "quote_ident(sequencename) = pg_get_serial_sequence(:t, 'id')"
            ),
            {"t": table.name},
        ).scalar()
    else:
        found = conn.execute(
            text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table.name}
        ).scalar()
    return int(found or 0)


def _set_high_water(conn: Connection, table: Table, value: int) -> None:
    """Make the table's next id `value + 1`."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :v, :called)"),
            {"t": table.name, "v": max(value, 1), "called": value > 0},
        )
        return
    done = conn.execute(
        text("UPDATE sqlite_sequence SET seq = :v WHERE name = :t"), {"t": table.name, "v": value}
    )
    if done.rowcount == 0:
        conn.execute(
            text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :v)"), {"t": table.name, "v": value}
        )


def _copy(source: Connection, target: Connection) -> list[Copied]:
    schema.metadata.create_all(target)
    copied: list[Copied] = []
    for table in schema.metadata.sorted_tables:  # parents before the rows that refer to them
        rows = _rows(source, table)
        for start in range(0, len(rows), BATCH):
            target.execute(insert(table), [_for_insert(r) for r in rows[start : start + BATCH]])
        next_id = None
        if _sequenced(table):
            high = max([_high_water(source, table), *(int(r["id"]) for r in rows)], default=0)
            _set_high_water(target, table, high)
            next_id = high + 1
        back = _rows(target, table)
        digest = _digest(rows)
        if len(back) != len(rows) or _digest(back) != digest:
            raise StoreError(f"table {table.name}: the copy differs from the source; nothing was written")
        copied.append(Copied(table.name, len(rows), digest, next_id))
    return copied


def migrate(source_url: str, target_url: str) -> list[Copied]:
    """Copy the registry at `source_url` into the empty database at `target_url`; what was copied.

    ValidationError (nothing written) for a bad URL, a source at another schema version or without a
    registry, and a target that is not empty; StoreError when the copy fails (rolled back).
    """
    source = _open(source_url, "from")
    try:
        target = _open(target_url, "to")
        try:
            _check_source(source)
            _check_target(target)
            try:
                with source.read() as src, target.engine.begin() as dst:
                    return _copy(src, dst)
            except SQLAlchemyError as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                raise StoreError(f"the copy failed, nothing was written: {reason}") from None
        finally:
            target.close()
    finally:
        source.close()
