"""The dashboard's session, CSRF and event-stream endpoints over HTTP, against a real coordinator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing

import httpx
import pytest
from coordinator_harness import Coordinator, assert_error, create_token, enroll, unchanged
from web_harness import chromium, open_page

from wgmesh.coordinator import identity
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store


def login(coordinator: Coordinator, token: str | None = None) -> tuple[httpx.Client, str]:
    """A cookie-carrying client logged in with `token` (the admin token), and its CSRF token."""
    client = httpx.Client(base_url=coordinator.url, timeout=10.0, trust_env=False, verify=coordinator.verify)
    r = client.post("/api/v1/session", json={"token": token or coordinator.admin_token})
    assert r.status_code == 201, r.text
    return client, r.json()["csrf_token"]


@pytest.fixture
def session(coordinator: Coordinator) -> Iterator[tuple[httpx.Client, str]]:
    client, csrf = login(coordinator)
    with closing(client):
        yield client, csrf


def events(response: httpx.Response) -> Iterator[tuple[str, dict[str, object]]]:
    """(event, data) pairs of a text/event-stream response."""
    kind, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "" and data:
            yield kind, json.loads(data)
            kind, data = "message", ""


def test_login_sets_an_httponly_strict_cookie_without_the_admin_token(coordinator: Coordinator) -> None:
    with coordinator.anonymous() as anon:
        r = anon.post("/api/v1/session", json={"token": coordinator.admin_token})
    assert r.status_code == 201, r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("wgmesh_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert coordinator.admin_token is not None and coordinator.admin_token not in cookie
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"csrf_token", "expires_at"} and body["csrf_token"] not in cookie


def test_login_with_a_wrong_token_is_refused(coordinator: Coordinator) -> None:
    with coordinator.anonymous() as anon:
        r = anon.post("/api/v1/session", json={"token": "wrong"})
        assert_error(r, 401, "invalid_credentials")
        assert "set-cookie" not in r.headers


def test_login_must_be_json_so_a_cross_site_form_cannot_log_in(coordinator: Coordinator) -> None:
    body = json.dumps({"token": coordinator.admin_token})
    with coordinator.anonymous() as anon:
        for ctype in ("text/plain", "application/x-www-form-urlencoded"):
            r = anon.post("/api/v1/session", content=body, headers={"content-type": ctype})
            assert_error(r, 422, "unsupported_media_type")
            assert "set-cookie" not in r.headers


def test_the_cookie_reads_the_admin_api_without_csrf(session: tuple[httpx.Client, str]) -> None:
    client, csrf = session
    assert client.get("/api/v1/nodes").status_code == 200
    r = client.get("/api/v1/session")
    assert r.status_code == 200 and r.json()["csrf_token"] == csrf


def test_a_cookie_change_without_the_csrf_header_is_refused(
    coordinator: Coordinator, admin: httpx.Client, session: tuple[httpx.Client, str]
) -> None:
    client, csrf = session
    other, other_csrf = login(coordinator)
    other.close()
    with unchanged(admin):
        for headers in ({}, {"x-csrf-token": "forged"}, {"x-csrf-token": other_csrf}):
            assert_error(client.post("/api/v1/tokens", json={}, headers=headers), 403, "csrf")
            assert_error(client.patch("/api/v1/network", json={}, headers=headers), 403, "csrf")
            assert_error(client.delete("/api/v1/tokens/1", headers=headers), 403, "csrf")
            assert_error(client.delete("/api/v1/session", headers=headers), 403, "csrf")
    r = client.post("/api/v1/tokens", json={"description": "from the cookie"}, headers={"x-csrf-token": csrf})
    assert r.status_code == 201, r.text


def test_bearer_tokens_still_work_and_win_over_the_cookie(
    coordinator: Coordinator, session: tuple[httpx.Client, str]
) -> None:
    client, _ = session
    with coordinator.admin() as admin:
        assert admin.post("/api/v1/tokens", json={}).status_code == 201  # no CSRF needed with a bearer
    # a wrong bearer token is refused even when a valid cookie comes along
    r = client.get("/api/v1/nodes", headers={"authorization": "Bearer wrong"})
    assert_error(r, 401, "invalid_credentials")


def test_a_forged_cookie_is_refused(coordinator: Coordinator) -> None:
    with httpx.Client(
        base_url=coordinator.url,
        trust_env=False,
        verify=coordinator.verify,
        cookies={"wgmesh_session": "forged"},
    ) as c:
        assert_error(c.get("/api/v1/nodes"), 401, "invalid_session")
        assert_error(c.get("/api/v1/session"), 401, "invalid_session")


def test_logout_kills_the_session_on_the_server(coordinator: Coordinator) -> None:
    client, csrf = login(coordinator)
    with closing(client):
        sid = client.cookies["wgmesh_session"]
        r = client.delete("/api/v1/session", headers={"x-csrf-token": csrf})
        assert r.status_code == 204
        assert 'wgmesh_session=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    with httpx.Client(
        base_url=coordinator.url, trust_env=False, verify=coordinator.verify, cookies={"wgmesh_session": sid}
    ) as c:
        assert_error(c.get("/api/v1/nodes"), 401, "invalid_session")


def test_events_need_credentials(coordinator: Coordinator) -> None:
    with coordinator.anonymous() as anon:
        assert_error(anon.get("/api/v1/events"), 401)


def test_events_announce_a_change_at_once(coordinator: Coordinator, admin: httpx.Client) -> None:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.admin() as client, client.stream("GET", "/api/v1/events", timeout=10.0) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        stream = events(r)
        kind, first = next(stream)
        assert kind == "change"
        with coordinator.anonymous() as anon:
            enroll(anon, token, "gw-events")
        kind, data = next(stream)
        assert kind == "change"
        assert isinstance(data["version"], int) and isinstance(first["version"], int)
        assert data["version"] > first["version"]


def test_an_event_stream_ends_when_its_session_logs_out(
    coordinator: Coordinator, admin: httpx.Client
) -> None:
    token = create_token(admin)["token"]
    client, csrf = login(coordinator)
    with closing(client), client.stream("GET", "/api/v1/events", timeout=10.0) as r:
        stream = events(r)
        assert next(stream)[0] == "change"
        assert client.delete("/api/v1/session", headers={"x-csrf-token": csrf}).status_code == 204
        with coordinator.anonymous() as anon:
            enroll(anon, token, "gw-wakes-up")  # the next change wakes the stream up
        assert next(stream)[0] == "logout"
        assert list(stream) == []


def test_an_event_stream_ends_when_another_coordinator_revokes_its_token(
    coordinator: Coordinator, admin: httpx.Client
) -> None:
    r = admin.post("/api/v1/admin-tokens", json={"name": "stream-watcher"})
    assert r.status_code == 201, r.text
    client, _ = login(coordinator, r.json()["token"])
    with closing(client), client.stream("GET", "/api/v1/events", timeout=10.0) as r:
        stream = events(r)
        assert next(stream)[0] == "change"
        other = Store(f"sqlite:///{coordinator.db}")  # another coordinator of the registry
        try:
            Registry(other).admin_tokens.revoke("stream-watcher")
        finally:
            other.close()
        # the next change wakes the stream up
        assert (
            admin.post("/api/v1/nodes", json={"name": "wakes-up", "generate_keys": True}).status_code == 201
        )
        assert next(stream)[0] == "logout"
        assert list(stream) == []


def test_an_event_stream_opened_with_a_bearer_token_ends_when_the_token_is_revoked(
    coordinator: Coordinator, admin: httpx.Client
) -> None:
    r = admin.post("/api/v1/admin-tokens", json={"name": "bearer-watcher"})
    assert r.status_code == 201, r.text
    headers = {"authorization": f"Bearer {r.json()['token']}"}
    with (
        httpx.Client(base_url=coordinator.url, trust_env=False, verify=coordinator.verify) as client,
        client.stream("GET", "/api/v1/events", headers=headers, timeout=10.0) as r,
    ):
        assert r.status_code == 200
        stream = events(r)
        assert next(stream)[0] == "change"
        assert admin.delete("/api/v1/admin-tokens/bearer-watcher").status_code == 200
        assert (
            admin.post("/api/v1/nodes", json={"name": "wakes-bearer", "generate_keys": True}).status_code
            == 201
        )
        assert next(stream)[0] == "logout"
        assert list(stream) == []


def test_the_dashboard_is_served_with_a_strict_policy(coordinator: Coordinator) -> None:
    with coordinator.anonymous() as anon:
        r = anon.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert '<script src="/assets/app.js"' in r.text
        for name, ctype in (("app.js", "javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg")):
            r = anon.get(f"/assets/{name}")
            assert r.status_code == 200 and ctype in r.headers["content-type"], name
        for bad in ("/assets/nope.js", "/assets/..%2Fpyproject.toml", "/assets/index.html", "/assets/.env"):
            assert anon.get(bad).status_code == 404, bad


def test_the_browser_trusts_the_pinned_key_and_no_other(coordinator: Coordinator) -> None:
    """What lets the dashboard tests' Chromium accept the self-signed identity is a real pin."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
    for pins, fails in (([coordinator.pin], False), ([identity.generate().pin], True)):
        with chromium(pins) as browser:
            page = browser.new_page()
            try:
                open_page(page, coordinator.url + "/healthz")
                failed = False
            except Exception as exc:
                assert "ERR_CERT" in str(exc), exc
                failed = True
            assert failed is fails
