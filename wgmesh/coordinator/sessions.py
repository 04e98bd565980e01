"""Dashboard sessions: an HttpOnly cookie instead of the admin token, and CSRF checks on every change.

A login with the admin token creates a server-side session: a random session id goes into the cookie and
a CSRF token goes to the page, which echoes it in the `X-CSRF-Token` header on every state change.
Sessions live in the registry's database (`sessions`, schema version 10), so every coordinator of the
registry serves every browser, and a logout or a revocation on one ends the session on all. The table
keeps only the SHA-256 of each session id, its expiry and the row id of the admin token that opened it:
never the id, the token or the CSRF token, which is derived from the session id (an HMAC keyed with it),
so whoever reads the database can neither present a cookie nor forge the header. Revoking the token
ends its sessions (`drop_token`), and the API checks the token is still live on every request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, func, insert, select

from wgmesh.coordinator import schema
from wgmesh.coordinator.store import Store, as_utc
from wgmesh.errors import AuthError, ForbiddenError

COOKIE = "wgmesh_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_TTL = 12 * 3600.0
MAX_SESSIONS = 1000


@dataclass(frozen=True)
class Session:
    """One logged-in browser."""

    csrf: str
    expires_at: float
    token_id: int
    """The admin token the session was opened with (admin_tokens), whose rights it has."""


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _csrf(session_id: str) -> str:
    # Derived, not stored: the page gets it again from GET /api/v1/session on any coordinator, and the
    # database holds nothing that yields it.
    mac = hmac.new(session_id.encode(), b"wgmesh dashboard csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class SessionTable:
    """Sessions by the hash of their id, with an expiry, in the registry's database (blocking calls:
    handlers run them in the thread pool)."""

    def __init__(
        self,
        store: Store,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
        limit: int = MAX_SESSIONS,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self.limit = limit

    def create(self, token_id: int) -> tuple[str, Session]:
        """A new session opened with admin token `token_id`: (the id for the cookie, the session with its
        CSRF token)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(csrf=_csrf(session_id), expires_at=self.clock() + self.ttl, token_id=token_id)
        t = schema.sessions
        # bump=False: a login changes nothing a netmap shows, so it wakes no long poll
        with self.store.write(bump=False) as w:
            self._expire(w.conn)
            count = w.conn.execute(select(func.count()).select_from(t)).scalar_one()
            if count >= self.limit:  # drop the oldest rather than grow without bound
                oldest = select(t.c.id_hash).order_by(t.c.expires_at).limit(count - self.limit + 1)
                w.conn.execute(delete(t).where(t.c.id_hash.in_(oldest.scalar_subquery())))
            w.conn.execute(
                insert(t).values(
                    id_hash=_digest(session_id), token_id=token_id, expires_at=_at(session.expires_at)
                )
            )
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session for a cookie value, or None (unknown, expired or logged out)."""
        if not session_id:
            return None
        t = schema.sessions
        with self.store.read() as conn:
            row = conn.execute(
                select(t.c.token_id, t.c.expires_at).where(t.c.id_hash == _digest(session_id))
            ).first()
        if row is None:
            return None
        expires = as_utc(row.expires_at)
        assert expires is not None  # NOT NULL
        if expires.timestamp() <= self.clock():
            return None  # the sweep (sweeps.py) deletes it
        return Session(csrf=_csrf(session_id), expires_at=expires.timestamp(), token_id=int(row.token_id))

    def delete(self, session_id: str | None) -> bool:
        """Log out; True when there was a session."""
        if not session_id:
            return False
        t = schema.sessions
        with self.store.write(bump=False) as w:
            ended = int(w.conn.execute(delete(t).where(t.c.id_hash == _digest(session_id))).rowcount)
            self._announce(w.conn, ended)
        return ended > 0

    def drop_token(self, token_id: int) -> int:
        """End every session opened with admin token `token_id` (it was revoked); how many there were."""
        t = schema.sessions
        with self.store.write(bump=False) as w:
            ended = int(w.conn.execute(delete(t).where(t.c.token_id == token_id)).rowcount)
            self._announce(w.conn, ended)
        return ended

    def expire(self) -> int:
        """Delete the expired sessions (the periodic sweep); how many there were."""
        with self.store.write(bump=False) as w:
            return self._expire(w.conn)

    def __len__(self) -> int:
        t = schema.sessions
        with self.store.read() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(t).where(t.c.expires_at > _at(self.clock()))
                ).scalar_one()
            )

    def _announce(self, conn: Connection, ended: int) -> None:
        # The event streams of ended sessions, on every coordinator, look again and tell their pages.
        if ended:
            self.store.announce(conn, 0)

    def _expire(self, conn: Connection) -> int:
        t = schema.sessions
        return int(conn.execute(delete(t).where(t.c.expires_at <= _at(self.clock()))).rowcount)


def check_csrf(method: str, session: Session, headers: Mapping[str, str]) -> None:
    """Refuse (ForbiddenError, 403) a state change made with the cookie but without the session's token."""
    if method.upper() in SAFE_METHODS:
        return
    sent = headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise ForbiddenError(
            f"missing or wrong {CSRF_HEADER} header: a change made with the session cookie needs "
            "the CSRF token the login returned",
            code="csrf",
        )


def cookie_session(table: SessionTable, cookies: Mapping[str, str]) -> Session:
    """The session of a request's cookie, or AuthError."""
    session = table.get(cookies.get(COOKIE))
    if session is None:
        raise AuthError("session expired or logged out; log in again", code="invalid_session")
    return session
