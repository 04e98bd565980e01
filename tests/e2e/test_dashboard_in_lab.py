"""The dashboard against a running lab: real agents' reports drawn as direct links with their RTT."""

from __future__ import annotations

import httpx
import pytest
from web_harness import chromium, login

from wgmesh import trust
from wgmesh.lab import Lab, wait_until
from wgmesh.pins import Pin

pytestmark = [pytest.mark.e2e]


@pytest.mark.lab(sites=3)
def test_dashboard_draws_the_lab(lab: Lab) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415 - chromium() skips when playwright is missing

    pin = Pin.parse(lab.pin)
    with httpx.Client(
        base_url=lab.url,
        headers={"Authorization": f"Bearer {lab.admin_token}"},
        trust_env=False,
        verify=trust.pinned(lambda: [pin]),
    ) as admin:

        def all_direct() -> bool:
            links = admin.get("/api/v1/topology").json()["links"]
            return len(links) == 3 and all(link["path"] == "direct" for link in links)

        wait_until(all_direct, 40, "three direct links in the topology")
    with chromium([pin]) as browser:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.set_default_timeout(15_000)
        page = context.new_page()
        try:
            login(page, lab.url, lab.admin_token)
            for site in lab.plan.sites:
                expect(page.locator(f'#topology g.node[data-node="{site.node}"]')).to_be_visible()
            expect(page.locator('#topology g.link-group[data-path="direct"]')).to_have_count(3)
            page.locator('#topology g.node[data-node="gw1"] circle').click()
            expect(page.locator("#details-fields")).to_contain_text(str(lab.plan.site(1).underlay_ip))
            expect(page.locator('#details-peers tr[data-peer="gw2"]')).to_contain_text("direct UDP")
            expect(page.locator('#details-peers tr[data-peer="gw2"]')).to_contain_text("s ago")  # handshake
            expect(page.locator("#live")).to_have_text("live")
        finally:
            context.close()
