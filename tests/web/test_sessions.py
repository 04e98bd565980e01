"""Unit tests of wgmesh.coordinator.sessions: the session table (in a SQLite registry) and the CSRF check,
with a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from wgmesh.coordinator import schema
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.sessions import (
    COOKIE,
    CSRF_HEADER,
    Session,
    SessionTable,
    check_csrf,
    cookie_session,
)
from wgmesh.coordinator.store import Store
from wgmesh.errors import AuthError, ForbiddenError
from wgmesh.models import Network


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    Registry(store).initialise(Network())
    try:
        yield store
    finally:
        store.close()


def test_a_session_is_found_by_its_id_and_carries_a_csrf_token(store: Store) -> None:
    table = SessionTable(store, ttl=60, clock=Clock())
    sid, session = table.create(1)
    assert table.get(sid) == session
    assert len(sid) >= 40 and len(session.csrf) >= 40 and sid != session.csrf
    other_sid, other = table.create(1)
    assert other_sid != sid and other.csrf != session.csrf


def test_the_table_keeps_only_hashes_of_session_ids(store: Store) -> None:
    table = SessionTable(store, clock=Clock())
    sid, session = table.create(1)
    with store.read() as conn:
        rows = [tuple(str(v) for v in row) for row in conn.execute(select(schema.sessions))]
    assert len(rows) == 1
    for secret in (sid, session.csrf):
        assert all(secret not in value for value in rows[0])


def test_another_coordinators_table_finds_the_session_with_its_csrf_token(store: Store) -> None:
    sid, session = SessionTable(store, clock=Clock()).create(1)
    assert SessionTable(store, clock=Clock()).get(sid) == session  # another coordinator's table


def test_unknown_and_empty_ids_find_nothing(store: Store) -> None:
    table = SessionTable(store, clock=Clock())
    table.create(1)
    assert table.get("nope") is None
    assert table.get("") is None
    assert table.get(None) is None


def test_sessions_expire(store: Store) -> None:
    clock = Clock()
    table = SessionTable(store, ttl=60, clock=clock)
    sid, session = table.create(1)
    assert session.expires_at == 1060.0
    clock.now = 1059.9
    assert table.get(sid) is not None
    clock.now = 1060.0
    assert table.get(sid) is None
    assert len(table) == 0


def test_logout_deletes_the_session(store: Store) -> None:
    table = SessionTable(store, clock=Clock())
    sid, _ = table.create(1)
    assert table.delete(sid) is True
    assert table.get(sid) is None
    assert table.delete(sid) is False
    assert table.delete(None) is False


def test_revoking_a_token_ends_only_its_sessions(store: Store) -> None:
    table = SessionTable(store, clock=Clock())
    first, _ = table.create(1)
    second, _ = table.create(1)
    other, _ = table.create(2)
    assert table.drop_token(1) == 2
    assert table.get(first) is None and table.get(second) is None
    assert table.get(other) is not None


def test_the_sweep_deletes_expired_rows_only(store: Store) -> None:
    clock = Clock()
    table = SessionTable(store, ttl=60, clock=clock)
    old, _ = table.create(1)
    clock.now += 30
    young, _ = table.create(1)
    clock.now += 30
    assert table.expire() == 1
    with store.read() as conn:
        assert len(conn.execute(select(schema.sessions)).all()) == 1
    assert table.get(young) is not None and table.get(old) is None


def test_the_table_is_bounded_and_drops_the_oldest(store: Store) -> None:
    clock = Clock()
    table = SessionTable(store, ttl=100, clock=clock, limit=3)
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


def test_cookie_session_refuses_a_missing_or_dead_cookie(store: Store) -> None:
    table = SessionTable(store, clock=Clock())
    sid, session = table.create(1)
    assert cookie_session(table, {COOKIE: sid}) == session
    for cookies in ({}, {COOKIE: "forged"}, {"other": sid}):
        with pytest.raises(AuthError) as caught:
            cookie_session(table, cookies)
        assert caught.value.status == 401
