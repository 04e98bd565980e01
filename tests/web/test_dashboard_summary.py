"""A thousand gateways (a generated registry, tests/large_mesh): the dashboard shows the coordinator's
summary instead of the full mesh (which it never asks for), drills down from a tag and a problem to their
nodes a page at a time and from a node to its links, and takes an update from the event stream.

Every wait is on a condition (Playwright's auto-waiting `expect`), never a bare sleep; no speed target
here (benchmarks/dashboard_scale.py measures it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import large_mesh
import pytest
from coordinator_harness import Coordinator
from web_harness import open_page, shoot

from wgmesh.lab.timescale import scaled

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
from playwright.sync_api import expect

N = 1000
PEERS = 60
# A change costs the coordinator a new registry snapshot and summary (seconds on a loaded machine), the
# first summary parses every report: no speed target here (the benchmark measures it).
WAIT = scaled(30) * 1000


@pytest.fixture(scope="module")
def mesh(coordinator: Coordinator) -> large_mesh.LargeMesh:
    return large_mesh.fill_database(coordinator.db_url, N, peers_per_node=PEERS)


def test_a_thousand_gateways_summary_drill_down_and_update(
    page: Any,
    coordinator: Coordinator,
    admin: httpx.Client,
    mesh: large_mesh.LargeMesh,
    screenshots: Path | None,
) -> None:
    assert coordinator.admin_token is not None
    page.set_default_timeout(WAIT)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    want = large_mesh.expected_counts(mesh, N)

    open_page(page, coordinator.url + "/")
    page.get_by_label("Admin token").fill(coordinator.admin_token)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#summary-section")).to_be_visible(timeout=WAIT)
    expect(page.locator("#topology-section")).to_be_hidden(timeout=WAIT)
    online = N - len(mesh.offline)
    expect(page.locator('[data-field="nodes"]')).to_have_text(
        f"{N} ({online} online, {len(mesh.offline)} offline)", timeout=WAIT
    )
    t = want["total"]
    expect(page.locator('[data-field="links"]')).to_have_text(
        f"{N * (N - 1) // 2}: {t['direct']} direct, {t['relay']} relay, {t['down']} down, {t['unknown']} unknown",
        timeout=WAIT,
    )
    expect(page.locator("#summary-tags tbody tr")).to_have_count(
        len(large_mesh.CLOUDS) + len(large_mesh.REGIONS), timeout=WAIT
    )
    expect(page.locator("#summary-sites tbody tr")).to_have_count(N // 2, timeout=WAIT)
    shoot(page, screenshots, "dashboard-1000-summary")

    # a tag -> its nodes, a page at a time
    page.locator("#summary-tags").get_by_role("button", name="region:eu-west-1").click()
    eu = [mesh.names[i] for i in range(N) if mesh.tags(i)[1] == "region:eu-west-1"]
    expect(page.locator("#drill-nodes-title")).to_have_text("Tag region:eu-west-1", timeout=WAIT)
    expect(page.locator("#drill-nodes-range")).to_have_text(f"1-50 of {len(eu)}", timeout=WAIT)
    expect(page.locator("#drill-nodes-table tbody tr").first).to_have_attribute(
        "data-node", eu[0], timeout=WAIT
    )
    # the version its agent reports, in the last column: none in this mesh's reports
    expect(page.locator("#drill-nodes-table tbody tr").first.locator("td").last).to_have_text("unknown")
    page.locator("#drill-nodes-next").click()
    expect(page.locator("#drill-nodes-range")).to_have_text(f"51-100 of {len(eu)}", timeout=WAIT)
    expect(page.locator("#drill-nodes-table tbody tr").first).to_have_attribute(
        "data-node", eu[50], timeout=WAIT
    )

    # a problem -> its nodes
    page.locator('#summary-problems [data-problem="offline"]').get_by_role("button").click()
    offline = [mesh.names[i] for i in sorted(mesh.offline)]
    expect(page.locator("#drill-nodes-range")).to_have_text(
        f"1-{len(offline)} of {len(offline)}", timeout=WAIT
    )
    rows = page.locator("#drill-nodes-table tbody tr")
    expect(rows).to_have_count(len(offline), timeout=WAIT)
    assert [rows.nth(i).get_attribute("data-node") for i in range(len(offline))] == offline

    # a node -> its links, filtered by state
    node = mesh.names[7]
    page.locator("#drill-nodes-table").get_by_role("button", name=offline[0]).click()
    page.locator("#summary-problems").get_by_role("button", name=re.compile("^All nodes")).click()
    expect(page.locator("#drill-nodes-title")).to_have_text("All nodes", timeout=WAIT)
    page.locator("#drill-nodes-table").get_by_role("button", name=node, exact=True).click()
    expect(page.locator("#drill-links-title")).to_have_text(f"Links of {node}", timeout=WAIT)
    expect(page.locator("#drill-links-range")).to_have_text(f"1-50 of {N - 1}", timeout=WAIT)
    page.locator("#drill-links-state").select_option("down")
    down = want[node]["down"]
    assert down > 0
    expect(page.locator("#drill-links-range")).to_have_text(f"1-{min(down, 50)} of {down}", timeout=WAIT)
    expect(page.locator('#drill-links-table tbody tr[data-path="down"]')).to_have_count(
        min(down, 50), timeout=WAIT
    )
    expect(page.locator('#drill-links-table tbody tr:not([data-path="down"])')).to_have_count(0, timeout=WAIT)
    shoot(page, screenshots, "dashboard-1000-links")

    # an admin change reaches the page through the event stream
    version = int(page.locator("body").get_attribute("data-version"))
    r = admin.patch(f"/api/v1/nodes/{mesh.names[0]}", json={"tags": ["cloud:oracle"]})
    assert r.status_code == 200, r.text
    expect(page.locator("#summary-tags").get_by_role("button", name="cloud:oracle")).to_be_visible(
        timeout=WAIT
    )
    assert int(page.locator("body").get_attribute("data-version")) > version
    expect(page.locator("#drill-links-title")).to_have_text(
        f"Links of {node}", timeout=WAIT
    )  # the drill-down stays

    full = [u for u in asked if re.search(r"/api/v1/(topology|statuses)(\?|$)", u)]
    assert not full, f"the full document was asked for: {full}"
