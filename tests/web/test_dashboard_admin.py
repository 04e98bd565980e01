"""The dashboard's admin tokens and audit sections in headless Chromium against a real coordinator: a token
created and revoked from the page, the revoked token's open dashboard logged out at once, a read-only
session refused a change, and the audit tab showing each of these."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from coordinator_harness import Coordinator
from web_harness import Mesh, login

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
from playwright.sync_api import expect


@pytest.fixture
def dashboard(page: Any, coordinator: Coordinator, mesh: Mesh) -> Any:
    assert coordinator.admin_token is not None
    login(page, coordinator.url, coordinator.admin_token)
    return page


def test_create_an_admin_token_and_see_it_in_the_audit_tab(
    dashboard: Any, coordinator: Coordinator, admin: httpx.Client
) -> None:
    page = dashboard
    page.get_by_role("link", name="Admin tokens").click()
    page.locator("#admin-token-name").fill("web-reader")
    page.get_by_label("Read-only").check()
    page.get_by_role("button", name="Create admin token").click()
    secret = page.locator("#token-secret-value")
    expect(secret).not_to_be_empty()
    token = secret.text_content() or ""
    row = page.locator('#admin-tokens-table tr[data-admin-token="web-reader"]')
    expect(row).to_contain_text("read-only")
    expect(row).to_have_attribute("data-state", "active")
    assert token not in page.locator("#admin-tokens-table").inner_text()
    # the secret is shown under the form that made it, and goes when dismissed
    expect(page.locator("#admin-token-form + #token-secret")).to_be_visible()
    page.get_by_role("button", name="Done").click()
    expect(page.locator("#token-secret")).to_be_hidden()
    expect(secret).to_be_empty()
    with httpx.Client(
        base_url=admin.base_url, headers={"Authorization": f"Bearer {token}"}, verify=coordinator.verify
    ) as reader:
        assert reader.get("/api/v1/nodes").status_code == 200
    page.get_by_role("link", name="Audit").click()
    entry = (
        page.locator("#audit-table tbody tr")
        .filter(has_text="admin_token.create")
        .filter(has_text="web-reader")
    )
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text("session:env")
    assert token not in page.locator("#audit-table").inner_text()


def test_revoking_a_token_logs_out_its_open_dashboard(
    dashboard: Any, browser: Any, coordinator: Coordinator, admin: httpx.Client
) -> None:
    r = admin.post("/api/v1/admin-tokens", json={"name": "web-leaver"})
    assert r.status_code == 201, r.text
    other_context = browser.new_context()
    other_context.set_default_timeout(10_000)
    try:
        other = other_context.new_page()
        login(other, coordinator.url, r.json()["token"])
        expect(other.locator("#live")).to_have_text("live")
        page = dashboard
        page.reload()  # lists the token made through the API
        page.locator("#app-view").wait_for(state="visible")
        page.get_by_role("button", name="Revoke web-leaver (admin)").click()
        page.locator("#confirm-ok").click()
        expect(page.locator('#admin-tokens-table tr[data-admin-token="web-leaver"]')).to_have_attribute(
            "data-state", "revoked"
        )
        # the other page learns it at once from its event stream, without a click
        expect(other.locator("#login-view")).to_be_visible()
        expect(other.locator("#login-error")).to_have_text("Your session ended; log in again.")
        entry = page.locator("#audit-table tbody tr").filter(has_text="admin_token.revoke")
        expect(entry.filter(has_text="web-leaver")).to_have_count(1)
    finally:
        other_context.close()


def test_a_read_only_session_is_refused_a_change(
    page: Any, coordinator: Coordinator, mesh: Mesh, admin: httpx.Client
) -> None:
    r = admin.post("/api/v1/admin-tokens", json={"name": "web-viewer", "read_only": True})
    assert r.status_code == 201, r.text
    login(page, coordinator.url, r.json()["token"])
    before = admin.get("/api/v1/tokens").json()
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#action-status")).to_contain_text("read-only")
    assert admin.get("/api/v1/tokens").json() == before
