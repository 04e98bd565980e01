"""The store and registry on both databases, under concurrency: several coordinators (each its own Store,
its own connection pool) writing one database at once from threads.

PostgreSQL runs at READ COMMITTED: what SQLite's single writer gives for free (writers one after another)
must come from the registry version bump's row lock there, and a read must still see one snapshot.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from coordinator_harness import undo_schema_down_to
from pg_harness import Cluster
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from wgmesh import keys
from wgmesh.coordinator import schema
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store
from wgmesh.errors import AuthError, ConflictError
from wgmesh.models import EnrollRequest, Network, NodeCreate, TokenCreate

COORDINATORS = 3
PARALLEL = 12
T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database on each backend, initialised as `wgmesh-coordinator init` does."""
    if request.param == "sqlite":
        found = f"sqlite:///{tmp_path / 'c.db'}"
        yield found
        return
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    with cluster.database() as found:
        yield found


@pytest.fixture
def registries(url: str) -> Iterator[list[Registry]]:
    """COORDINATORS registries on one database, the first of which initialised it."""
    found = [Registry(Store(url)) for _ in range(COORDINATORS)]
    found[0].initialise(Network(), "admin-token-0123456789")
    try:
        yield found
    finally:
        for registry in found:
            registry.store.close()


def together(calls: list[Callable[[], T]]) -> list[T | Exception]:
    """Run every call at the same moment, one thread each; each result, or the exception it raised."""
    barrier = threading.Barrier(len(calls))

    def one(call: Callable[[], T]) -> T | Exception:
        barrier.wait(timeout=30)
        try:
            return call()
        except Exception as exc:  # the test looks at which calls were refused, and how
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def request(token: str, name: str, public_key: str | None = None) -> EnrollRequest:
    return EnrollRequest(token=token, name=name, public_key=public_key or keys.generate_keypair().public_key)


def test_concurrent_writers_each_get_their_own_version(registries: list[Registry]) -> None:
    before = registries[0].version()
    calls = [
        (
            lambda r=registries[i % COORDINATORS], i=i: (
                r.create_static_node(NodeCreate(name=f"peer-{i}", generate_keys=True))[0].id
            )
        )
        for i in range(PARALLEL)
    ]
    results = together(calls)
    assert all(isinstance(r, int) for r in results), results
    # Each write raised the version by one, none lost: the bump serialised them.
    assert registries[1].version() == before + PARALLEL
    nodes = registries[2].list_nodes()
    assert len({n.overlay_ip for n in nodes}) == len({n.public_key for n in nodes}) == PARALLEL


def test_a_one_time_token_is_redeemed_once_across_coordinators(registries: list[Registry]) -> None:
    token = registries[0].create_token(TokenCreate()).token
    results = together(
        [
            lambda r=registries[i % COORDINATORS], i=i: r.enroll(request(token, f"gw-{i}"))
            for i in range(PARALLEL)
        ]
    )
    won = [r for r in results if isinstance(r, tuple)]
    assert len(won) == 1, results
    refused = [r for r in results if not isinstance(r, tuple)]
    assert all(isinstance(r, AuthError) and r.code == "token_used" for r in refused), refused
    assert [n.name for n in registries[1].list_nodes()] == [registries[1].get_node(str(won[0][0])).name]
    assert registries[2].list_tokens()[0].uses == 1


def test_concurrent_enrollments_get_distinct_addresses(registries: list[Registry]) -> None:
    token = registries[0].create_token(TokenCreate(reusable=True)).token
    results = together(
        [
            lambda r=registries[i % COORDINATORS], i=i: r.enroll(request(token, f"gw-{i}"))
            for i in range(PARALLEL)
        ]
    )
    assert all(isinstance(r, tuple) for r in results), results
    nodes = registries[0].list_nodes()
    assert len(nodes) == PARALLEL
    assert len({n.overlay_ip for n in nodes}) == PARALLEL
    assert len({n.id for n in nodes}) == PARALLEL


def test_one_name_or_one_key_enrolled_at_once_lands_once(registries: list[Registry]) -> None:
    token = registries[0].create_token(TokenCreate(reusable=True)).token
    same_name = together(
        [lambda r=registries[i % COORDINATORS]: r.enroll(request(token, "twin")) for i in range(PARALLEL)]
    )
    key = keys.generate_keypair().public_key
    same_key = together(
        [
            lambda r=registries[i % COORDINATORS], i=i: r.enroll(request(token, f"k-{i}", key))
            for i in range(PARALLEL)
        ]
    )
    for results, code in ((same_name, "duplicate_name"), (same_key, "duplicate_key")):
        assert len([r for r in results if isinstance(r, tuple)]) == 1, results
        refused = [r for r in results if not isinstance(r, tuple)]
        assert all(isinstance(r, ConflictError) and r.code == code for r in refused), refused
    nodes = registries[0].list_nodes()
    assert len(nodes) == 2 and len({n.overlay_ip for n in nodes}) == 2


def test_a_read_sees_one_snapshot_while_others_write(registries: list[Registry]) -> None:
    store = registries[0].store
    with store.read() as conn:
        first = conn.execute(select(schema.registry.c.version)).scalar_one()
        registries[1].create_static_node(NodeCreate(name="meanwhile", generate_keys=True))
        assert registries[2].version() == first + 1  # committed, seen by everyone else
        # The same read transaction still sees the registry as it was: a snapshot is consistent.
        assert conn.execute(select(schema.registry.c.version)).scalar_one() == first
        assert conn.execute(select(func.count()).select_from(schema.nodes)).scalar_one() == 0


def old_database(url: str, version: int) -> None:
    """Make the database at `url` what `version` wrote, with a node and an admin token in it."""
    registry = Registry(Store(url))
    try:
        registry.initialise(Network(), "admin-token-0123456789")
        registry.create_static_node(NodeCreate(name="old-peer", generate_keys=True))
    finally:
        registry.store.close()
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn, conn:
            undo_schema_down_to(conn, version)
    else:
        with psycopg.connect(url) as conn:  # the cluster's URLs are libpq URIs too
            undo_schema_down_to(conn, version)


@pytest.mark.parametrize("version", [2, 4])
def test_coordinators_upgrading_together_apply_each_step_once(url: str, version: int) -> None:
    old_database(url, version)
    stores = [Store(url) for _ in range(COORDINATORS * 2)]
    try:
        results = together([store.upgrade for store in stores])
    finally:
        for store in stores:
            store.close()
    assert all(isinstance(r, list) for r in results), results
    # Each step was applied by exactly one of them, and the steps in order.
    applied = sorted(step for r in results for step in r)
    assert applied == list(range(version + 1, schema.SCHEMA_VERSION + 1)), results
    registry = Registry(Store(url))
    try:
        registry.store.check_schema()
        with registry.store.read() as conn:
            rows = conn.execute(select(schema.schema_version.c.version)).scalars().all()
        assert sorted(rows) == list(range(1, schema.SCHEMA_VERSION + 1))
        (node,) = registry.list_nodes()
        assert node.name == "old-peer" and node.mtu is None
        assert node.site == "old-peer"  # schema 12: a site of its own, so no HA group forms by itself
        with registry.store.read() as conn:
            assert conn.execute(select(schema.nodes.c.site)).scalars().all() == ["old-peer"]
        assert registry.network().mtu == 1420  # written by step 3, or kept
        assert registry.is_admin("admin-token-0123456789")
    finally:
        registry.store.close()


def test_a_node_without_a_site_is_refused_by_the_database_upgraded_or_new(url: str) -> None:
    """Schema 12's column is NOT NULL on both backends, upgraded from 11 or made new: a writer that
    forgot the site fails instead of leaving a node no group rule can place."""
    old_database(url, 11)
    store = Store(url)
    try:
        assert store.upgrade() == list(range(12, schema.SCHEMA_VERSION + 1))
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            conn.execute(text("UPDATE nodes SET site = NULL WHERE name = :n"), {"n": "old-peer"})
    finally:
        store.close()
