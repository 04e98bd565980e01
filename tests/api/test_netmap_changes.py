"""GET /api/v1/netmap/changes?since=V: the netmap as the change from the version the agent holds, long-polled
like /api/v1/netmap; whole when the version is not held; compressed when large; the server's delivery age."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from coordinator_harness import Api, Enrolled, assert_error, create_token, enroll, netmap

from wgmesh.models import NetMap, NetMapChange
from wgmesh.netmap_delta import merge

BACKENDS = ("sqlite", "postgresql")


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
