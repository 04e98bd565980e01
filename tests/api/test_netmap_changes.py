"""GET /api/v1/netmap/changes?since=V: the netmap as the change from the version the agent holds, long-polled
like /api/v1/netmap; whole when the version is not held; compressed when large; the server's delivery age."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from coordinator_harness import Api, Enrolled, assert_error, create_token, enroll, netmap
from sqlalchemy import update

from wgmesh import keys
from wgmesh.coordinator import schema
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store
from wgmesh.models import EnrollRequest, NetMap, NetMapChange, Network, TokenCreate
from wgmesh.netmap_delta import merge

BACKENDS = ("sqlite", "postgresql")
KEY_A, KEY_B = keys.generate_keypair().public_key, keys.generate_keypair().public_key


@pytest.fixture(scope="module")
def mesh(coordinator: Api, admin: httpx.Client) -> dict[str, Enrolled]:
    token = create_token(admin, reusable=True, allow_subnets=["10.0.0.0/8"])["token"]
    with coordinator.anonymous() as anon:
        return {name: enroll(anon, token, name) for name in ("ch-a", "ch-b", "ch-c")}


def changes(coordinator: Api, node: Enrolled, since: int, wait: float = 0) -> httpx.Response:
    with coordinator.node(node.credential) as client:
        return client.get("/api/v1/netmap/changes", params={"since": since, "wait": wait}, timeout=30)


def whole(coordinator: Api, node: Enrolled) -> NetMap:
    return NetMap.model_validate(netmap(coordinator, node))


def test_a_change_carries_only_the_peer_that_changed_and_merges_into_the_whole_netmap(
    coordinator: Api, mesh: dict[str, Enrolled]
) -> None:
    # The netmap held must be one the coordinator built a snapshot for: ask for it through changes once.
    first = changes(coordinator, mesh["ch-a"], since=-1)
    assert first.status_code == 200, first.text
    held = merge(None, NetMapChange.model_validate(first.json()))
    with coordinator.node(mesh["ch-b"].credential) as b:
        r = b.post("/api/v1/status", json={"endpoints": ["198.51.100.7:51820"]})
        assert r.status_code == 200 and r.json()["changed"], r.text
    answer = changes(coordinator, mesh["ch-a"], since=held.version, wait=10)
    assert answer.status_code == 200, answer.text
    update = NetMapChange.model_validate(answer.json())
    assert update.since == held.version
    assert [p.name for p in update.netmap.peers] == ["ch-b"]
    assert update.netmap.peers[0].endpoints[0].host == "198.51.100.7"
    assert merge(held, update) == whole(coordinator, mesh["ch-a"])


def test_a_deleted_node_is_named_removed(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    token = create_token(admin)["token"]
    with coordinator.anonymous() as anon:
        doomed = enroll(anon, token, "ch-doomed")
    held = merge(None, NetMapChange.model_validate(changes(coordinator, mesh["ch-a"], since=-1).json()))
    assert "ch-doomed" in {p.name for p in held.peers}
    assert admin.delete("/api/v1/nodes/ch-doomed").status_code == 200
    update = NetMapChange.model_validate(
        changes(coordinator, mesh["ch-a"], since=held.version, wait=10).json()
    )
    assert update.since == held.version
    assert update.removed == [doomed.node_id]
    merged = merge(held, update)
    assert "ch-doomed" not in {p.name for p in merged.peers}
    assert merged == whole(coordinator, mesh["ch-a"])


def test_a_version_the_coordinator_does_not_hold_gets_the_whole_netmap(
    coordinator: Api, mesh: dict[str, Enrolled]
) -> None:
    for since in (-1, 0, 10**9):
        answer = changes(coordinator, mesh["ch-c"], since=since)
        assert answer.status_code == 200, answer.text
        update = NetMapChange.model_validate(answer.json())
        assert update.since is None
        assert update.netmap == whole(coordinator, mesh["ch-c"])


def test_the_current_version_is_held_and_answered_304(coordinator: Api, mesh: dict[str, Enrolled]) -> None:
    latest = NetMapChange.model_validate(changes(coordinator, mesh["ch-a"], since=-1).json()).version
    poll: dict[str, Any] = {}

    def run() -> None:
        poll["answer"] = changes(coordinator, mesh["ch-a"], since=latest, wait=1)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert poll["answer"].status_code == 304


def test_a_large_answer_is_gzipped_for_a_client_that_accepts_it_and_carries_its_age(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.anonymous() as anon:
        for i in range(12):  # enough peers for a netmap over the compression threshold
            enroll(anon, token, f"ch-many-{i}")
    with coordinator.node(mesh["ch-a"].credential) as client:
        packed = client.get(
            "/api/v1/netmap/changes", params={"since": -1}, headers={"Accept-Encoding": "gzip"}
        )
        plain = client.get(
            "/api/v1/netmap/changes", params={"since": -1}, headers={"Accept-Encoding": "identity"}
        )
        refused = client.get(
            "/api/v1/netmap/changes", params={"since": -1}, headers={"Accept-Encoding": "gzip;q=0"}
        )
    assert packed.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers and "content-encoding" not in refused.headers
    # httpx decodes: the same document either way, in fewer bytes on the wire.
    assert packed.json() == plain.json()
    assert int(packed.headers["content-length"]) < len(plain.content) / 2
    assert float(packed.headers["wgmesh-version-age"]) >= 0


def test_changes_need_a_node_credential_and_a_numeric_since(
    coordinator: Api, mesh: dict[str, Enrolled]
) -> None:
    with coordinator.anonymous() as anon:
        assert_error(anon.get("/api/v1/netmap/changes", params={"since": 0}), 401)
    with coordinator.admin() as admin_client:
        assert_error(admin_client.get("/api/v1/netmap/changes", params={"since": 0}), 401)
    with coordinator.node(mesh["ch-a"].credential) as client:
        assert_error(client.get("/api/v1/netmap/changes", params={"since": "x"}), 422, "invalid_query")


def test_a_registry_version_going_back_forgets_the_versions_held(tmp_path: Path) -> None:
    """After a restore to an older state the numbers will come again with other contents: no change is
    computed from a snapshot of before."""
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        registry = Registry(store)
        registry.initialise(Network())
        token = registry.create_token(TokenCreate(reusable=True, expires_in=None)).token
        node_id, _, _ = registry.enroll(EnrollRequest(token=token, name="back-a", public_key=KEY_A))
        registry.enroll(EnrollRequest(token=token, name="back-b", public_key=KEY_B))
        held = registry.snapshot()
        assert registry.netmap_change(held, node_id, held.version - 1).since == held.version - 1
        with store.engine.begin() as conn:
            conn.execute(update(schema.registry).values(version=held.version - 5))
        older = registry.snapshot()
        assert older.version == held.version - 5
        assert registry.netmap_change(older, node_id, held.version - 1).since is None
        assert registry.netmap_change(older, node_id, held.version).since is None
    finally:
        store.close()


def test_snapshots_share_the_routes_that_did_not_change(tmp_path: Path) -> None:
    """The 64 versions held must not each hold their own thousand routes (~110 MB at 1,000 nodes): a version
    that moved no route row shares the routes, and one that did keeps every route judged the same."""
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        registry = Registry(store)
        registry.initialise(Network())
        token = registry.create_token(TokenCreate(reusable=True, expires_in=None)).token
        registry.enroll(EnrollRequest(token=token, name="share-a", public_key=KEY_A, subnets=["10.1.0.0/16"]))
        registry.enroll(EnrollRequest(token=token, name="share-b", public_key=KEY_B, subnets=["10.2.0.0/16"]))
        first = registry.snapshot()
        assert [r.state for r in first.routes] == ["pending", "pending"]
        c_key = keys.generate_keypair().public_key
        c_id, _, _ = registry.enroll(EnrollRequest(token=token, name="share-c", public_key=c_key))
        second = registry.snapshot()
        assert second.version > first.version
        assert second.routes is first.routes  # no route row moved: the same routes
        registry.set_own_subnets(c_id, [ipaddress.ip_network("10.3.0.0/16")])
        registry.decide_route("share-a", ipaddress.ip_network("10.1.0.0/16"), "approved", actor="admin")
        third = registry.snapshot()
        by_gateway = {r.gateway: r for r in third.routes}
        assert [r.gateway for r in third.routes] == ["share-a", "share-b", "share-c"]
        assert by_gateway["share-b"] is first.routes[1]  # judged the same: the same object
        assert by_gateway["share-a"].state == "active" and first.routes[0].state == "pending"
        assert by_gateway["share-c"].state == "pending"
        # The same statement again (every agent's start) answers with the routes held, judged once.
        again = registry.set_own_subnets(c_id, [ipaddress.ip_network("10.3.0.0/16")])
        assert again == [by_gateway["share-c"]] and again[0] is by_gateway["share-c"]
        assert registry.snapshot().version == third.version
        # An admin's listing answers with the same held routes, sorted.
        assert [r is by_gateway[r.gateway] for r in registry.routes()] == [True, True, True]
    finally:
        store.close()
