"""A node credential seen to work is taken from memory (no database read for most of an agent's calls), and
refused as soon as the database says it is gone: two registries on one database, as two coordinators of
one PostgreSQL (`heard` is what their change listener calls on a NOTIFY; SQLite stands in for the
database, the rule is the registry's)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import delete

from wgmesh import keys
from wgmesh.coordinator import registry as registry_module
from wgmesh.coordinator import schema
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store
from wgmesh.errors import AuthError
from wgmesh.models import EnrollRequest, Network, TokenCreate, TokenCreated
from wgmesh.values import NodeId


@dataclass
class Pair:
    a: Registry
    b: Registry
    token: TokenCreated

    def enroll(self, name: str) -> tuple[NodeId, str]:
        request = EnrollRequest(
            token=self.token.token, name=name, public_key=keys.generate_keypair().public_key
        )
        node_id, credential, _ = self.a.enroll(request)
        return node_id, credential

    def b_hears_a(self) -> None:
        """What B's listener does on A's NOTIFY."""
        self.b.store.heard(self.a.store.version())


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [Store(url), Store(url)]
    try:
        a, b = Registry(stores[0]), Registry(stores[1])
        a.initialise(Network())
        token = a.create_token(TokenCreate(reusable=True, expires_in=None))
        yield Pair(a, b, token)
    finally:
        for store in stores:
            store.close()


def test_a_credential_seen_to_work_is_taken_from_memory_until_a_version_says_otherwise(pair: Pair) -> None:
    node_id, credential = pair.enroll("gw-1")
    for _ in range(2):  # the first from the database, the second from memory (B's snapshot is made)
        assert pair.b.authenticate_node(credential) == node_id
    # Its row removed behind the registries' backs, without a version (nothing of theirs does that): B
    # still takes it from memory, which shows it asks no database...
    with pair.a.store.engine.begin() as conn:
        conn.execute(delete(schema.credentials).where(schema.credentials.c.node_id == node_id))
    assert pair.b.authenticate_node(credential) == node_id
    assert pair.b.authenticate_held(credential) == node_id  # as the event loop asks, first
    # ...and A, which never saw it work, asks the database and refuses it.
    with pytest.raises(AuthError):
        pair.a.authenticate_node(credential)
    # The next version B hears of, it reads the credentials again with its snapshot: refused.
    pair.enroll("gw-2")
    pair.b_hears_a()
    assert pair.b.authenticate_held(credential) is None  # a version it has no snapshot of: not from memory
    with pytest.raises(AuthError):
        pair.b.authenticate_node(credential)


def test_a_credential_retired_after_a_rotation_on_one_coordinator_is_refused_by_the_other(pair: Pair) -> None:
    node_id, old = pair.enroll("gw-1")
    assert pair.b.authenticate_node(old) == node_id  # B holds it in memory
    pair.a.request_rotation("gw-1")
    new, _ = pair.a.rotate_key(node_id, keys.generate_keypair().public_key)
    pair.b_hears_a()
    # Both work until the new one is first used: B asks the database for a node holding two.
    assert pair.b.authenticate_node(old) == node_id
    assert pair.a.authenticate_node(new) == node_id  # retires the old one, without a version
    assert pair.b.authenticate_held(old) is None
    with pytest.raises(AuthError):
        pair.b.authenticate_node(old)
    assert pair.b.authenticate_node(new) == node_id


def test_a_rotation_under_the_same_key_is_refused_too(pair: Pair) -> None:
    # A credential asked again with the key the node holds (its answer was lost): no key change to tell.
    node_id, old = pair.enroll("gw-1")
    key = pair.a.snapshot().by_id[node_id].public_key
    assert pair.b.authenticate_node(old) == node_id
    new, _ = pair.a.rotate_key(node_id, key)
    pair.b_hears_a()
    assert pair.b.authenticate_node(new) == node_id  # B retires the old one this time
    with pytest.raises(AuthError):
        pair.a.authenticate_node(old)
    with pytest.raises(AuthError):
        pair.b.authenticate_node(old)


def test_a_deleted_node_is_refused_once_its_version_is_seen_even_unheard(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    node_id, credential = pair.enroll("gw-1")
    # The first from the database, the second from memory (B's snapshot made), the third with the version
    # B's store learnt then.
    for _ in range(3):
        assert pair.b.authenticate_node(credential) == node_id
    pair.a.delete_node("gw-1")
    # No listener (its connection down): B takes the version it knows while it trusts it...
    monkeypatch.setattr(registry_module, "VERSION_TRUST", 3600.0)
    assert pair.b.authenticate_node(credential) == node_id
    # ...for VERSION_TRUST at most (1 s), then asks the database; here that time has passed.
    monkeypatch.setattr(registry_module, "VERSION_TRUST", 0.0)
    with pytest.raises(AuthError):
        pair.b.authenticate_node(credential)


def test_the_store_learns_versions_committed_or_heard_and_never_an_older_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    here, elsewhere = Store(url), Store(url)
    try:
        Registry(here).initialise(Network())
        start = here.version()
        with here.write():
            pass
        assert here.version(max_age=60) == start + 1  # learnt at the commit
        with elsewhere.write():
            pass
        assert here.version(max_age=60) == start + 1  # not heard of: the version learnt stands...
        assert here.version() == start + 2  # ...but the database is asked without max_age
        with elsewhere.write():
            pass
        here.heard(0)  # a listener that reconnected: whatever it missed
        assert here.version(max_age=60) == start + 3
        here.heard(start + 7)
        assert here.version(max_age=60) == start + 7
    finally:
        here.close()
        elsewhere.close()
