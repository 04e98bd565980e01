"""Unit tests of wgmesh.coordinator.sessions: the session table and the CSRF check, with a fake clock."""

from __future__ import annotations

import pytest

from wgmesh.coordinator.sessions import (
    COOKIE,
    CSRF_HEADER,
    Session,
    SessionTable,
    check_csrf,
    cookie_session,
)
from wgmesh.errors import AuthError, ForbiddenError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_is_found_by_its_id_and_carries_a_csrf_token() -> None:
    table = SessionTable(ttl=60, clock=Clock())
    sid, session = table.create(1)
    assert table.get(sid) == session
    assert len(sid) >= 40 and len(session.csrf) >= 40 and sid != session.csrf
    other_sid, other = table.create(1)
    assert other_sid != sid and other.csrf != session.csrf


def test_the_table_keeps_only_hashes_of_session_ids() -> None:
    table = SessionTable(clock=Clock())
    sid, _ = table.create(1)
    assert sid not in table._sessions
    assert all(sid not in key for key in table._sessions)


def test_unknown_and_empty_ids_find_nothing() -> None:
    table = SessionTable(clock=Clock())
    table.create(1)
    assert table.get("nope") is None
    assert table.get("") is None
    assert table.get(None) is None


def test_sessions_expire() -> None:
    clock = Clock()
    table = SessionTable(ttl=60, clock=clock)
    sid, session = table.create(1)
    assert session.expires_at == 1060.0
    clock.now = 1059.9
    assert table.get(sid) is not None
    clock.now = 1060.0
    assert table.get(sid) is None
    assert len(table) == 0


def test_logout_deletes_the_session() -> None:
    table = SessionTable(clock=Clock())
    sid, _ = table.create(1)
    assert table.delete(sid) is True
    assert table.get(sid) is None
    assert table.delete(sid) is False
    assert table.delete(None) is False


def test_the_table_is_bounded_and_drops_the_oldest() -> None:
    clock = Clock()
    table = SessionTable(ttl=100, clock=clock, limit=3)
    ids = []
    for _ in range(4):
        ids.append(table.create(1)[0])
        clock.now += 1
    assert len(table) == 3
    assert table.get(ids[0]) is None
    assert all(table.get(i) is not None for i in ids[1:])


SESSION = Session(csrf="the-csrf-token", expires_at=2000.0, token_id=1)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "get"])
def test_reads_need_no_csrf_header(method: str) -> None:
    check_csrf(method, SESSION, {})


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_changes_need_the_sessions_csrf_token(method: str) -> None:
    check_csrf(method, SESSION, {CSRF_HEADER: "the-csrf-token"})
    for headers in ({}, {CSRF_HEADER: ""}, {CSRF_HEADER: "the-csrf-tokem"}, {CSRF_HEADER: "x"}):
        with pytest.raises(ForbiddenError) as caught:
            check_csrf(method, SESSION, headers)
        assert caught.value.code == "csrf" and caught.value.status == 403


def test_cookie_session_refuses_a_missing_or_dead_cookie() -> None:
    table = SessionTable(clock=Clock())
    sid, session = table.create(1)
    assert cookie_session(table, {COOKIE: sid}) == session
    for cookies in ({}, {COOKIE: "forged"}, {"other": sid}):
        with pytest.raises(AuthError) as caught:
            cookie_session(table, cookies)
        assert caught.value.status == 401
