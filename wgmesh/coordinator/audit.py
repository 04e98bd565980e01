"""The audit log: one entry per admin change (who, what, when, from where), never a secret.

The API records an entry for every operation the table marks with an audit action, once it has succeeded
(operations.to_route); the entry's detail is the request body without the fields that carry secrets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, insert, select

from wgmesh.coordinator import schema
from wgmesh.coordinator.store import Store, as_utc, utcnow
from wgmesh.models import AuditEntry

# Body fields never written to the log: tokens and credentials are secrets; keys are kept out too, so
# that nothing in the log ever needs to be guarded like one.
SECRET_FIELDS = frozenset({"token", "credential", "secret", "public_key", "private_key", "psk"})
MAX_LIMIT = 1000
MAX_TARGET = 200


def detail_of(body: BaseModel | None) -> dict[str, Any]:
    """What a request body asked for, as JSON, without its secret fields."""
    if body is None:
        return {}
    data = body.model_dump(mode="json", exclude_unset=True)
    return {k: v for k, v in data.items() if k not in SECRET_FIELDS}


def write_entry(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any],
    client: str | None = None,
) -> None:
    """One entry, in the caller's transaction: a change an agent makes (a key rotation, a replacement)
    is logged in the transaction that makes it, so that neither exists without the other."""
    conn.execute(
        insert(schema.audit).values(
            at=utcnow(),
            actor=actor,
            action=action,
            target=target[:MAX_TARGET],
            detail=detail,
            client=client,
        )
    )


class AuditLog:
    """The audit entries of one registry."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(
        self, *, actor: str, action: str, target: str, detail: dict[str, Any], client: str | None
    ) -> None:
        """Store one entry (without bumping the registry version: agents have nothing to learn)."""
        with self.store.write(bump=False) as w:
            write_entry(w.conn, actor=actor, action=action, target=target, detail=detail, client=client)

    def entries(self, *, since: datetime | None = None, limit: int = 100) -> Sequence[AuditEntry]:
        """The latest `limit` entries at or after `since`, oldest first."""
        a = schema.audit
        query = select(a).order_by(a.c.id.desc()).limit(max(1, min(limit, MAX_LIMIT)))
        if since is not None:
            query = query.where(a.c.at >= since)
        with self.store.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            AuditEntry(
                id=r["id"],
                at=as_utc(r["at"]),
                actor=r["actor"],
                action=r["action"],
                target=r["target"],
                detail=dict(r["detail"]),
                client=r["client"],
            )
            for r in reversed(rows)
        ]
