"""Dashboard sessions: an HttpOnly cookie instead of the admin token, and CSRF checks on every change.

A login with the admin token creates a server-side session: a random session id goes into the cookie and
a random CSRF token goes to the page, which echoes it in the `X-CSRF-Token` header on every state change.
The table keeps only the SHA-256 of each session id and the row id of the admin token that opened it, never
the token: revoking the token ends its sessions (`drop_token` here, and the API checks the token is still
live on every request, which other coordinators of the registry see too). Sessions live in the
coordinator's memory: a restart logs everybody out, which is what a dashboard can afford.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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


class SessionTable:
    """Sessions by the hash of their id, with an expiry; safe to use from worker threads."""

    def __init__(
        self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.time, limit: int = MAX_SESSIONS
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self.limit = limit
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, token_id: int) -> tuple[str, Session]:
        """A new session opened with admin token `token_id`: (the id for the cookie, the session with its
        CSRF token)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(
            csrf=secrets.token_urlsafe(32), expires_at=self.clock() + self.ttl, token_id=token_id
        )
        with self._lock:
            self._expire()
            if len(self._sessions) >= self.limit:  # drop the oldest rather than grow without bound
                oldest = min(self._sessions, key=lambda k: self._sessions[k].expires_at)
                del self._sessions[oldest]
            self._sessions[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session for a cookie value, or None (unknown, expired or logged out)."""
        if not session_id:
            return None
        key = _digest(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.expires_at <= self.clock():
                del self._sessions[key]
                return None
        return session

    def delete(self, session_id: str | None) -> bool:
        """Log out; True when there was a session."""
        if not session_id:
            return False
        with self._lock:
            return self._sessions.pop(_digest(session_id), None) is not None

    def drop_token(self, token_id: int) -> int:
        """End every session opened with admin token `token_id` (it was revoked); how many there were."""
        with self._lock:
            keys = [k for k, s in self._sessions.items() if s.token_id == token_id]
            for key in keys:
                del self._sessions[key]
        return len(keys)

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._sessions)

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]


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
