"""The dashboard's HA groups panel (issue 18) in headless Chromium: it shows what /topology joined (members
in order with their role, liveness, the other agents' verdicts, who carries the prefix to whom, the last
failover), and says so when there is none.

Every wait is on a condition (Playwright's auto-waiting `expect`), never a bare sleep.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from coordinator_harness import Coordinator, Enrolled, create_token, enroll, post_status
from web_harness import build_mesh, login, shoot

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
from playwright.sync_api import expect

PREFIX = "10.42.0.0/24"


@pytest.fixture(scope="module")
def ha_mesh(coordinator: Coordinator, admin: httpx.Client) -> dict[str, Enrolled]:
    """The dashboard tests' mesh, plus gw2 and gw2b of site vpc2 advertising PREFIX (gw2b approved by an
    admin) and vm1, which lost gw2 and sends the prefix to gw2b."""
    build_mesh(coordinator, admin)
    token = create_token(admin, reusable=True, allow_subnets=["10.42.0.0/16"])["token"]
    with coordinator.anonymous() as anon:
        nodes = {
            "gw2": enroll(anon, token, "gw2", subnets=[PREFIX], site="vpc2"),
            "gw2b": enroll(anon, token, "gw2b", subnets=[PREFIX], site="vpc2"),
            "vm1": enroll(anon, token, "vm1"),
        }
    r = admin.post("/api/v1/nodes/gw2b/routes/approve", json={"prefix": PREFIX})
    assert r.status_code == 200, r.text
    moved = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    post_status(
        coordinator,
        nodes["vm1"],
        {
            "peers": [
                {"public_key": nodes["gw2"].keypair.public_key, "health": "down"},
                {"public_key": nodes["gw2b"].keypair.public_key, "health": "up"},
            ],
            "ha": [
                {
                    "prefix": PREFIX,
                    "holder": "gw2b",
                    "code": "holder_down",
                    "reason": "gw2 answers no probe <b>",
                    "changed_at": moved,
                    "moved_from": "gw2",
                }
            ],
        },
    )
    post_status(
        coordinator, nodes["gw2b"], {"ha": [{"prefix": PREFIX, "holder": "gw2b", "code": "holder_down"}]}
    )
    return nodes


def test_the_ha_panel_shows_each_group_as_the_coordinator_joined_it(
    page: Any, coordinator: Coordinator, ha_mesh: dict[str, Enrolled], screenshots: Path | None
) -> None:
    assert coordinator.admin_token is not None
    login(page, coordinator.url, coordinator.admin_token)
    table = page.locator("#ha-table")
    expect(table).to_be_visible()
    primary = table.locator(f'tr[data-prefix="{PREFIX}"][data-member="gw2"]')
    standby = table.locator(f'tr[data-prefix="{PREFIX}"][data-member="gw2b"]')
    expect(primary).to_have_attribute("data-role", "primary")
    expect(standby).to_have_attribute("data-role", "standby")
    expect(primary).to_contain_text(PREFIX)
    expect(primary).to_contain_text("vpc2")
    expect(primary).to_contain_text("offline")  # gw2 never reported
    expect(primary).to_contain_text("up for 0 of 1, down for 1")
    expect(primary).to_contain_text("vm1: gw2 → gw2b (holder_down: gw2 answers no probe <b>)")
    expect(standby).to_contain_text("online")
    expect(standby).to_contain_text("up for 1 of 1")
    expect(standby.locator("td.carried-by")).to_have_text("gw2b, vm1")  # carried by: itself and vm1
    # the members in the coordinator's order: primary first
    expect(table.locator("tbody tr")).to_have_count(2)
    assert table.locator("tbody tr").first.get_attribute("data-member") == "gw2"
    page.locator("#ha-section").scroll_into_view_if_needed()
    shoot(page, screenshots, "dashboard-ha-groups")


def test_without_ha_groups_the_panel_says_so(
    page: Any, coordinator: Coordinator, admin: httpx.Client, ha_mesh: dict[str, Enrolled]
) -> None:
    assert admin.post("/api/v1/nodes/gw2b/routes/reject", json={"prefix": PREFIX}).status_code == 200
    try:
        assert coordinator.admin_token is not None
        login(page, coordinator.url, coordinator.admin_token)
        expect(page.locator("#ha-groups")).to_contain_text("No HA groups")
        expect(page.locator("#ha-table")).to_have_count(0)
    finally:
        assert admin.post("/api/v1/nodes/gw2b/routes/approve", json={"prefix": PREFIX}).status_code == 200
