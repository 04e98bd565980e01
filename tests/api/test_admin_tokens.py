"""Named admin tokens: created, listed and revoked through the API; read-only ones change nothing; revocation
ends bearer use and dashboard sessions at once; WGMESH_ADMIN_TOKEN is replaced, not accumulated; every admin
change leaves exactly one audit entry, without any secret. The rules are checked over the operations table,
so an operation added later is covered too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from coordinator_harness import Api, assert_error, create_token, running, unchanged
from inprocess_harness import InProcessCoordinator

from wgmesh import keys
from wgmesh.coordinator.app import OPERATIONS
from wgmesh.coordinator.operations import Operation
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store
from wgmesh.models import Network

STREAMS = {("GET", "/api/v1/events")}  # never ends on its own: its credentials are checked in tests/web


def make_admin_token(admin: httpx.Client, name: str, *, read_only: bool = False) -> str:
    r = admin.post("/api/v1/admin-tokens", json={"name": name, "read_only": read_only})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["read_only"], body["source"], body["revoked_at"]) == (
        name,
        read_only,
        "api",
        None,
    )
    return str(body["token"])


def audit(admin: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = admin.get("/api/v1/audit", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return list(r.json()["entries"])


def login(coordinator: Api, token: str) -> tuple[httpx.Client, str]:
    """A cookie-carrying client with a dashboard session opened with `token`, and its CSRF token."""
    client = coordinator.anonymous()
    r = client.post("/api/v1/session", json={"token": token})
    assert r.status_code == 201, r.text
    return client, str(r.json()["csrf_token"])


@pytest.fixture(scope="module")
def world(coordinator: Api) -> dict[str, str]:
    """What concrete paths need: a static node with keys, a second node, an enrollment token."""
    with coordinator.admin() as admin:
        for name in ("static-a", "static-b"):
            r = admin.post("/api/v1/nodes", json={"name": name, "generate_keys": True})
            assert r.status_code == 201, r.text
        token = create_token(admin)
    return {"node": "static-a", "a": "static-a", "b": "static-b", "token_id": str(token["id"])}


def concrete(op: Operation, world: dict[str, str], name: str = "nobody") -> str:
    path = op.path
    for key, value in {**world, "name": name}.items():
        path = path.replace("{" + key + "}", value)
    assert "{" not in path, path
    return path


def test_created_tokens_are_long_random_named_and_listed(coordinator: Api) -> None:
    with coordinator.admin() as admin:
        secret = make_admin_token(admin, "ops-alice")
        other = make_admin_token(admin, "ops-bob", read_only=True)
        assert secret != other and len(secret.removeprefix("wga_")) >= 43  # 32 bytes, base64url
        listed = {t["name"]: t for t in admin.get("/api/v1/admin-tokens").json()["admin_tokens"]}
        assert listed["ops-alice"]["read_only"] is False and listed["ops-bob"]["read_only"] is True
        assert listed["env"]["source"] == "env"  # the harness's WGMESH_ADMIN_TOKEN
        assert secret not in json.dumps(listed) and other not in json.dumps(listed)
        assert_error(admin.post("/api/v1/admin-tokens", json={"name": "ops-alice"}), 409, "duplicate_name")
        assert_error(admin.post("/api/v1/admin-tokens", json={"name": "Not A Name"}), 422)
        assert_error(admin.delete("/api/v1/admin-tokens/ghost"), 404, "unknown_admin_token")
    with coordinator.admin(secret) as alice:
        assert alice.get("/api/v1/nodes").status_code == 200


def test_a_revoked_token_and_its_session_get_401_at_once(coordinator: Api) -> None:
    with coordinator.admin() as admin:
        secret = make_admin_token(admin, "leaver")
        browser, csrf = login(coordinator, secret)
        with browser, coordinator.admin(secret) as bearer:
            assert bearer.get("/api/v1/nodes").status_code == 200
            assert browser.get("/api/v1/nodes").status_code == 200
            r = admin.delete("/api/v1/admin-tokens/leaver")
            assert r.status_code == 200, r.text
            assert r.json()["revoked_at"] is not None
            assert_error(bearer.get("/api/v1/nodes"), 401, "invalid_credentials")
            assert_error(browser.get("/api/v1/nodes"), 401, "invalid_session")
            assert_error(browser.get("/api/v1/session"), 401, "invalid_session")
            r = browser.post("/api/v1/tokens", json={}, headers={"X-CSRF-Token": csrf})
            assert_error(r, 401, "invalid_session")
            assert_error(browser.post("/api/v1/session", json={"token": secret}), 401, "invalid_credentials")
        # revoking again changes nothing; the name stays taken, so the audit log never names two tokens
        assert admin.delete("/api/v1/admin-tokens/leaver").status_code == 200
        assert_error(admin.post("/api/v1/admin-tokens", json={"name": "leaver"}), 409, "duplicate_name")


def test_a_session_ends_when_another_coordinator_revokes_its_token(coordinator: Api) -> None:
    """Coordinators of one registry share the database, not the session table: each request checks."""
    with coordinator.admin() as admin:
        secret = make_admin_token(admin, "elsewhere")
    browser, _ = login(coordinator, secret)
    with browser:
        assert browser.get("/api/v1/nodes").status_code == 200
        other = Store(f"sqlite:///{coordinator.db}")
        try:
            Registry(other).admin_tokens.revoke("elsewhere")
        finally:
            other.close()
        assert_error(browser.get("/api/v1/session"), 401, "invalid_session")
        assert_error(browser.get("/api/v1/nodes"), 401, "invalid_session")


ADMIN_WRITES = [op for op in OPERATIONS if op.auth == "admin"]
ADMIN_READS = [op for op in OPERATIONS if op.auth == "admin-read" and (op.method, op.path) not in STREAMS]


def test_the_table_says_reads_are_admin_read_and_changes_are_admin() -> None:
    for op in OPERATIONS:
        if op.auth in ("admin", "admin-read"):
            assert (op.auth == "admin-read") == (op.method == "GET"), (op.method, op.path)
    assert len(ADMIN_WRITES) >= 9 and len(ADMIN_READS) >= 12


@pytest.fixture(scope="module")
def reader(coordinator: Api) -> str:
    """A read-only admin token's secret."""
    with coordinator.admin() as admin:
        return make_admin_token(admin, "read-only-ops", read_only=True)


@pytest.mark.parametrize("op", ADMIN_WRITES, ids=lambda op: f"{op.method} {op.path}")
def test_a_read_only_token_is_refused_every_change(
    coordinator: Api, world: dict[str, str], reader: str, op: Operation
) -> None:
    path = concrete(op, world, name="env")
    body = {} if op.body is not None else None
    with coordinator.admin() as admin:
        before = len(audit(admin))
        with unchanged(admin), coordinator.admin(reader) as bearer:
            error = assert_error(bearer.request(op.method, path, json=body), 403, "read_only")
            assert "read-only" in error["message"]
        browser, csrf = login(coordinator, reader)
        with unchanged(admin), browser:
            r = browser.request(op.method, path, json=body, headers={"X-CSRF-Token": csrf})
            assert_error(r, 403, "read_only")
        # refused changes leave no entry; the login just made leaves its one
        assert [(e["action"], e["actor"]) for e in audit(admin)[before:]] == [
            ("session.login", "read-only-ops")
        ]


@pytest.mark.parametrize("op", ADMIN_READS, ids=lambda op: f"{op.method} {op.path}")
def test_a_read_only_token_sees_everything(coordinator: Api, world: dict[str, str], op: Operation) -> None:
    with coordinator.admin() as admin:
        secret = make_admin_token(admin, f"reader-{len(ADMIN_READS)}-{ADMIN_READS.index(op)}", read_only=True)
        with coordinator.admin(secret) as reader:
            r = reader.get(concrete(op, world))
            mine = admin.get(concrete(op, world))
    assert r.status_code == mine.status_code, r.text
    # a node that never reported has no status: 404 for every admin alike
    assert r.status_code == 200 or (op.path.endswith("/status") and r.status_code == 404), r.text
    if op.audit is None:
        assert r.json() == mine.json() or op.path == "/api/v1/audit"


# A call of every audited operation, in an order that works (each needs what the ones before made).
AUDITED: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("PATCH", "/api/v1/network", {"p2p": "auto"}, "default"),
    ("POST", "/api/v1/tokens", {"description": "audited"}, "<token id>"),
    ("DELETE", "/api/v1/tokens/{token_id}", None, "<token id>"),
    (
        "POST",
        "/api/v1/nodes",
        {"name": "audited-a", "generate_keys": True, "subnets": ["198.51.100.0/24"]},
        "audited-a",
    ),
    (
        "POST",
        "/api/v1/nodes/{node}/routes/reject",
        {"prefix": "198.51.100.0/24", "reason": "audited"},
        "audited-a",
    ),
    ("POST", "/api/v1/nodes/{node}/routes/approve", {"prefix": "198.51.100.0/24"}, "audited-a"),
    (
        "POST",
        "/api/v1/nodes/{node}/routes/alias",
        {"prefix": "198.51.100.0/24", "alias": "198.51.101.0/24"},
        "audited-a",
    ),
    ("POST", "/api/v1/nodes", {"name": "audited-b", "public_key": "<key>"}, "audited-b"),
    ("PATCH", "/api/v1/nodes/{node}", {"rate": "10mbit"}, "audited-a"),
    ("POST", "/api/v1/nodes/{node}/rotate-key", None, "audited-a"),
    ("GET", "/api/v1/nodes/{node}/config", None, "audited-a"),
    ("PUT", "/api/v1/pairs/{a}/{b}", {"p2p": "off"}, "audited-a/audited-b"),
    ("DELETE", "/api/v1/nodes/{node}", None, "audited-b"),
    ("POST", "/api/v1/admin-tokens", {"name": "audited-admin", "read_only": True}, "audited-admin"),
    ("DELETE", "/api/v1/admin-tokens/{name}", None, "audited-admin"),
    ("POST", "/api/v1/session", {"token": "<admin token>"}, ""),
    ("DELETE", "/api/v1/session", None, ""),
]


def test_every_audited_operation_is_exercised_and_every_change_is_audited() -> None:
    audited = {(op.method, op.path): op.audit for op in OPERATIONS if op.audit is not None}
    assert {(m, p) for m, p, _, _ in AUDITED} == set(audited)
    for op in OPERATIONS:
        if op.method != "GET" and op.auth != "node" and op.path != "/api/v1/enroll":
            assert op.audit is not None, f"{op.method} {op.path} changes something and records nothing"


def test_each_admin_action_leaves_one_entry_without_secrets(coordinator: Api) -> None:
    actions = {(op.method, op.path): op.audit for op in OPERATIONS}
    assert coordinator.admin_token is not None
    secrets_seen = [coordinator.admin_token]
    key = keys.generate_keypair()
    token_id = ""
    with coordinator.admin() as admin:
        browser, csrf = login(coordinator, coordinator.admin_token)
        with browser:
            for method, template, sample, target in AUDITED:
                before = audit(admin)
                path = (
                    template.replace("{token_id}", token_id)
                    .replace("{node}", target)
                    .replace("{a}/{b}", "audited-a/audited-b")
                    .replace("{name}", "audited-admin")
                )
                body = sample
                if sample is not None and sample.get("public_key") == "<key>":
                    body = {**sample, "public_key": key.public_key}
                if sample is not None and sample.get("token") == "<admin token>":
                    body = {"token": coordinator.admin_token}
                via_session = template == "/api/v1/session"
                client = browser if via_session else admin
                r = client.request(method, path, json=body, headers={"X-CSRF-Token": csrf})
                assert r.status_code < 300, (method, path, r.text)
                answer = r.json() if r.content else {}
                for field in ("token", "private_key", "csrf_token"):
                    if field in answer:
                        secrets_seen.append(answer[field])
                if "interface" in answer:
                    secrets_seen.append(answer["interface"]["private_key"])
                if template == "/api/v1/session" and method == "POST":
                    csrf = answer["csrf_token"]  # the new session's
                if template == "/api/v1/tokens":
                    token_id = str(answer["id"])
                new = audit(admin)[len(before) :]
                assert len(new) == 1, (method, path, new)
                (entry,) = new
                assert entry["action"] == actions[method, template]
                assert entry["target"] == target.replace("<token id>", token_id), entry
                assert entry["client"] == "127.0.0.1"
                assert entry["actor"] == (
                    "session:env" if template == "/api/v1/session" and method == "DELETE" else "env"
                ), entry
                if body is not None:
                    assert entry["detail"] == {
                        k: v for k, v in body.items() if k not in ("token", "public_key")
                    }
            # reads leave nothing, nor do refused changes
            before = audit(admin)
            assert admin.get("/api/v1/nodes").status_code == 200
            assert admin.patch("/api/v1/nodes/ghost", json={"rate": "1mbit"}).status_code == 404
            assert admin.post("/api/v1/nodes", json={"name": "BAD"}).status_code == 422
            assert audit(admin) == before
        everything = json.dumps(audit(admin))
    assert key.public_key not in everything
    for secret in secrets_seen:
        assert secret not in everything


def test_audit_since_and_limit(coordinator: Api) -> None:
    with coordinator.admin() as admin:
        make_admin_token(admin, "since-1")
        make_admin_token(admin, "since-2")
        entries = audit(admin)
        assert [e["target"] for e in audit(admin, limit=2)] == [e["target"] for e in entries[-2:]]
        assert audit(admin, since=entries[-1]["at"]) == entries[-1:]
        assert audit(admin, since="2999-01-01T00:00:00Z") == []
        assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)  # oldest first
        assert_error(admin.get("/api/v1/audit", params={"since": "yesterday"}), 422, "invalid_since")
        assert_error(admin.get("/api/v1/audit", params={"limit": "0"}), 422, "invalid_limit")
        assert_error(admin.get("/api/v1/audit", params={"limit": "99999999"}), 422, "invalid_limit")


def test_the_openapi_document_shows_each_operations_auth_level(coordinator: Api) -> None:
    with coordinator.anonymous() as anon:
        document = anon.get("/api/v1/openapi.json").json()
    for op in OPERATIONS:
        entry = document["paths"][op.path][op.method.lower()]
        assert entry["x-wgmesh-auth"] == op.auth
        assert entry.get("x-wgmesh-audit") == op.audit


def test_the_bootstrap_token_is_replaced_not_accumulated(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    first, second = "first-bootstrap-token-0123", "second-bootstrap-token-0123"
    with (
        running(InProcessCoordinator(db=db, log=tmp_path / "1.log", admin_token=first)) as c,
        c.admin(first) as old,
    ):
        assert old.get("/api/v1/nodes").status_code == 200
    with running(InProcessCoordinator(db=db, log=tmp_path / "2.log", admin_token=second)) as c:
        with c.admin(first) as old:
            assert_error(old.get("/api/v1/nodes"), 401, "invalid_credentials")
        with c.admin(second) as new:
            listed = new.get("/api/v1/admin-tokens").json()["admin_tokens"]
        assert [(t["name"], t["source"], t["revoked_at"] is None) for t in listed] == [
            ("env-1", "env", False),
            ("env", "env", True),
        ]
    # the same value again: nothing changes
    with (
        running(InProcessCoordinator(db=db, log=tmp_path / "3.log", admin_token=second)) as c,
        c.admin(second) as new,
    ):
        assert len(new.get("/api/v1/admin-tokens").json()["admin_tokens"]) == 2
    assert "previous WGMESH_ADMIN_TOKEN revoked" in (tmp_path / "2.log").read_text()
    assert first not in (tmp_path / "2.log").read_text()


def test_init_names_its_token_init_and_keeps_tokens_made_since(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        registry = Registry(store)
        token = registry.initialise(Network())
        assert token is not None and len(token.removeprefix("wga_")) >= 43
        assert [(t.name, t.source, t.read_only) for t in registry.admin_tokens.list()] == [
            ("init", "init", False)
        ]
        assert registry.initialise(Network()) is None  # run again: no second token
        identity = registry.admin_tokens.identify(token)
        assert identity is not None and identity.name == "init"
        assert registry.admin_tokens.identify(token + "x") is None
    finally:
        store.close()
