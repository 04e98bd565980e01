"""Admin tokens: named, full or read-only, revocable; stored as SHA-256 hashes, compared in constant time.

Where a token comes from decides its life: `init` prints one (named `init`), `api` ones are created and
revoked by name, and the bootstrap token of `WGMESH_ADMIN_TOKEN` (named `env`) is replaced, not
accumulated: a coordinator started with another value revokes the previous one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, RowMapping, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from wgmesh import keys
from wgmesh.coordinator import schema
from wgmesh.coordinator.store import Store, as_utc, utcnow
from wgmesh.errors import ConflictError, NotFoundError, ValidationError
from wgmesh.logs import kv
from wgmesh.models import AdminTokenInfo

log = logging.getLogger("wgmesh.coordinator")

Source = Literal["init", "env", "api", "upgrade"]
INIT_NAME = "init"
ENV_NAME = "env"
SECRET_BYTES = 32  # every token the coordinator makes holds this much randomness
MIN_SUPPLIED = 16  # the shortest WGMESH_ADMIN_TOKEN accepted


@dataclass(frozen=True)
class AdminIdentity:
    """Who an admin request acts as: the token's row, name and whether it may change anything."""

    token_id: int
    name: str
    read_only: bool


def new_secret() -> str:
    """A fresh admin token: `wga_` and 32 random bytes."""
    return "wga_" + secrets.token_urlsafe(SECRET_BYTES)


def check_supplied(token: str) -> None:
    """Refuse a supplied (WGMESH_ADMIN_TOKEN) token too short to be a secret."""
    if len(token) < MIN_SUPPLIED:
        raise ValidationError(f"an admin token must be at least {MIN_SUPPLIED} characters", code="weak_token")


def _info(row: RowMapping) -> AdminTokenInfo:
    return AdminTokenInfo(
        name=row["name"],
        read_only=bool(row["read_only"]),
        source=row["source"],
        created_at=as_utc(row["created_at"]),
        revoked_at=as_utc(row["revoked_at"]),
    )


def _insert(conn: Connection, token: str, name: str, *, read_only: bool, source: Source) -> None:
    conn.execute(
        insert(schema.admin_tokens).values(
            secret_hash=keys.hash_secret(token),
            name=name,
            read_only=read_only,
            source=source,
            created_at=utcnow(),
        )
    )


class AdminTokens:
    """The admin tokens of one registry."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def any(self) -> bool:
        """Whether any admin token exists (revoked ones included)."""
        with self.store.read() as conn:
            return bool(conn.execute(select(func.count()).select_from(schema.admin_tokens)).scalar_one())

    def create_init(self) -> str:
        """The token `init` prints, named `init`."""
        token = new_secret()
        with self.store.write(bump=False) as w:
            _insert(w.conn, token, INIT_NAME, read_only=False, source="init")
        return token

    def create(self, name: str, *, read_only: bool) -> tuple[AdminTokenInfo, str]:
        """A new named token from the API: its description and its secret, shown this once."""
        token = new_secret()
        try:
            with self.store.write(bump=False) as w:
                _insert(w.conn, token, name, read_only=read_only, source="api")
                row = (
                    w.conn.execute(select(schema.admin_tokens).where(schema.admin_tokens.c.name == name))
                    .mappings()
                    .one()
                )
        except IntegrityError:
            raise ConflictError(
                f"an admin token named {name!r} exists (names stay taken after revocation)",
                code="duplicate_name",
            ) from None
        return _info(row), token

    def bootstrap(self, token: str) -> None:
        """Make `token` (WGMESH_ADMIN_TOKEN) the bootstrap token, revoking the previous one if it differs.

        A token revoked through the API stays revoked even if the environment still names it.
        """
        check_supplied(token)
        digest = keys.hash_secret(token)
        t = schema.admin_tokens
        with self.store.write(bump=False) as w:
            # Coordinators starting together with one WGMESH_ADMIN_TOKEN take turns (the registry row's
            # lock; no version bump, nothing changes for nodes): the second finds the first's row.
            w.conn.execute(select(schema.registry.c.id).with_for_update())
            rows = w.conn.execute(select(t).where(t.c.source == ENV_NAME)).mappings().all()
            for old in rows:
                if old["secret_hash"] != digest and old["revoked_at"] is None:
                    # its name is freed for the new one; the old row stays for the audit trail
                    w.conn.execute(
                        update(t)
                        .where(t.c.id == old["id"])
                        .values(revoked_at=utcnow(), name=f"{ENV_NAME}-{old['id']}")
                    )
                    log.warning("previous WGMESH_ADMIN_TOKEN revoked", extra=kv(token_id=old["id"]))
            found = w.conn.execute(select(t).where(t.c.secret_hash == digest)).mappings().first()
            if found is None:
                _insert(w.conn, token, ENV_NAME, read_only=False, source="env")
            elif found["revoked_at"] is not None:
                log.warning("WGMESH_ADMIN_TOKEN is revoked: set a new one", extra=kv(name=found["name"]))
            elif found["source"] == "upgrade":
                # from before version 4: it is the bootstrap token now, replaced when the variable changes
                w.conn.execute(update(t).where(t.c.id == found["id"]).values(source="env"))

    def identify(self, token: str) -> AdminIdentity | None:
        """The live token `token` is, or None (constant-time compare against each stored hash)."""
        t = schema.admin_tokens
        with self.store.read() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.name, t.c.read_only, t.c.secret_hash).where(t.c.revoked_at.is_(None))
            ).all()
        found: AdminIdentity | None = None
        for row in rows:  # no early exit: the time taken does not tell which token came close
            if keys.secret_matches(token, row.secret_hash):
                found = AdminIdentity(row.id, row.name, bool(row.read_only))
        return found

    def live(self, token_id: int) -> AdminIdentity | None:
        """The token with this id if it is not revoked (a dashboard session's check), else None."""
        t = schema.admin_tokens
        with self.store.read() as conn:
            row = conn.execute(
                select(t.c.id, t.c.name, t.c.read_only).where(t.c.id == token_id, t.c.revoked_at.is_(None))
            ).first()
        return None if row is None else AdminIdentity(row.id, row.name, bool(row.read_only))

    def list(self) -> Sequence[AdminTokenInfo]:
        """Every admin token, revoked ones included, oldest first; secrets are never shown."""
        with self.store.read() as conn:
            rows = conn.execute(select(schema.admin_tokens).order_by(schema.admin_tokens.c.id)).mappings()
            return [_info(r) for r in rows]

    def revoke(self, name: str) -> tuple[AdminTokenInfo, int]:
        """Revoke the token named `name`: its description and row id (to drop its sessions)."""
        t = schema.admin_tokens
        with self.store.write(bump=False) as w:
            row = w.conn.execute(select(t).where(t.c.name == name)).mappings().first()
            if row is None:
                raise NotFoundError(f"admin token {name!r} does not exist", code="unknown_admin_token")
            if row["revoked_at"] is None:
                w.conn.execute(update(t).where(t.c.id == row["id"]).values(revoked_at=utcnow()))
            row = w.conn.execute(select(t).where(t.c.id == row["id"])).mappings().one()
        return _info(row), int(row["id"])
