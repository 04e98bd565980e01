"""Concurrent writes on a registry of 1,000 nodes never answer 500: the store orders them (SQLite's "database
is locked" is the coordinator's problem, not the client's), and the registry is consistent afterwards."""

from __future__ import annotations

import ipaddress
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from coordinator_harness import ADMIN_TOKEN, Coordinator, running

from wgmesh import keys
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store
from wgmesh.models import EnrollRequest, Network, TokenCreate

REGISTRY_SIZE = 1000
ENROLLMENTS = 50
REPORTERS = 100
ADMIN_CHANGES = 10


@dataclass
class Filled:
    db: Path
    token: str
    credentials: list[str]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    """A registry of 1,000 enrolled nodes, made through the registry's own enrollment (in this process)."""
    db = tmp_path_factory.mktemp("big") / "coordinator.db"
    store = Store(f"sqlite:///{db}")
    try:
        registry = Registry(store)
        registry.initialise(Network(), admin_token=ADMIN_TOKEN)
        token = registry.create_token(TokenCreate(reusable=True, expires_in=None)).token
        credentials = []
        for i in range(REGISTRY_SIZE):
            request = EnrollRequest(
                token=token, name=f"big-{i}", public_key=keys.generate_keypair().public_key
            )
            _, credential, _ = registry.enroll(request)
            credentials.append(credential)
    finally:
        store.close()
    return Filled(db, token, credentials)


@pytest.fixture(scope="module")
def coordinator(filled: Filled) -> Iterator[Coordinator]:
    with running(Coordinator(db=filled.db, log=filled.db.with_name("coordinator.log"))) as c:
        yield c


def test_fifty_concurrent_enrollments_with_reports_and_admin_changes_all_succeed(
    coordinator: Coordinator, filled: Filled
) -> None:
    answers: list[tuple[str, int, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(ENROLLMENTS + REPORTERS + ADMIN_CHANGES)

    def record(kind: str, response: httpx.Response) -> None:
        with lock:
            answers.append((kind, response.status_code, response.text[:300]))

    def enroll(i: int) -> None:
        body = {"token": filled.token, "name": f"new-{i}", "public_key": keys.generate_keypair().public_key}
        with coordinator.anonymous() as client:
            start.wait()
            record("enroll", client.post("/api/v1/enroll", json=body, timeout=300))

    def report(i: int) -> None:
        body = {"endpoints": [f"198.18.{i // 200}.{i % 200 + 10}:51820"]}
        with coordinator.node(filled.credentials[i]) as client:
            start.wait()
            record("status", client.post("/api/v1/status", json=body, timeout=300))

    def change(i: int) -> None:
        with coordinator.admin() as client:
            start.wait()
            record(
                "admin", client.patch(f"/api/v1/nodes/big-{500 + i}", json={"tags": [f"t{i}"]}, timeout=300)
            )

    threads = [threading.Thread(target=enroll, args=(i,)) for i in range(ENROLLMENTS)]
    threads += [threading.Thread(target=report, args=(i,)) for i in range(REPORTERS)]
    threads += [threading.Thread(target=change, args=(i,)) for i in range(ADMIN_CHANGES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    failed = [a for a in answers if a[1] not in (200, 201)]
    assert not failed, f"{len(failed)} of {len(answers)} writes failed, e.g. {failed[:3]}"
    assert Counter(kind for kind, _, _ in answers) == {
        "enroll": ENROLLMENTS,
        "status": REPORTERS,
        "admin": ADMIN_CHANGES,
    }

    # Consistent afterwards, as the API says and as the database holds it.
    with coordinator.admin() as client:
        nodes = client.get("/api/v1/nodes", timeout=60).json()["nodes"]
    names = [n["name"] for n in nodes]
    assert len(names) == len(set(names)) == REGISTRY_SIZE + ENROLLMENTS
    assert {f"new-{i}" for i in range(ENROLLMENTS)} <= set(names)
    overlay = [ipaddress.ip_address(n["overlay_ip"]) for n in nodes]
    assert len(set(overlay)) == len(overlay)
    assert {
        n["name"]: n["tags"] for n in nodes if n["name"] in {f"big-{500 + i}" for i in range(ADMIN_CHANGES)}
    } == {f"big-{500 + i}": [f"t{i}"] for i in range(ADMIN_CHANGES)}
    with sqlite3.connect(filled.db) as db:
        assert (
            db.execute(
                "SELECT count(*), count(DISTINCT name), count(DISTINCT overlay_ip) FROM nodes"
            ).fetchone()
            == (REGISTRY_SIZE + ENROLLMENTS,) * 3
        )
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert "database is locked" not in coordinator.log.read_text()
