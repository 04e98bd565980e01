"""The dashboard in headless Chromium against a real coordinator with an enrolled mesh.

Every wait is on a condition (Playwright's auto-waiting `expect`), never a bare sleep.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from coordinator_harness import Coordinator, enroll, post_status
from web_harness import GATEWAYS, PATHS, Mesh, login, open_page, shoot

from wgmesh.join_token import JoinToken

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
from playwright.sync_api import expect

EN_DASH = "\N{EN DASH}"  # what the dashboard shows for an unknown value


@pytest.fixture
def dashboard(page: Any, coordinator: Coordinator, mesh: Mesh) -> Any:
    assert coordinator.admin_token is not None
    login(page, coordinator.url, coordinator.admin_token)
    return page


def test_wrong_token_is_refused(page: Any, coordinator: Coordinator, screenshots: Path | None) -> None:
    open_page(page, coordinator.url + "/")
    page.get_by_label("Admin token").fill("not-the-admin-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert").filter(has_text="not valid")).to_be_visible()
    expect(page.locator("#app-view")).to_be_hidden()
    assert not [c for c in page.context.cookies() if c["name"] == "wgmesh_session"]
    shoot(page, screenshots, "dashboard-login")


def test_login_shows_every_node_and_link(
    dashboard: Any, coordinator: Coordinator, screenshots: Path | None
) -> None:
    page = dashboard
    for name in GATEWAYS:
        expect(page.locator(f'#topology g.node[data-node="{name}"]')).to_be_visible()
        expect(page.locator(f'#nodes-table tr[data-node="{name}"]')).to_be_visible()
    for (a, b), path in PATHS.items():
        link = page.locator(f'#topology g.link-group[data-link="{a}|{b}"]')
        expect(link).to_have_attribute("data-path", path)
    expect(page.locator("#topology g.link-group")).to_have_count(len(PATHS))
    # RTT on hover: the link's <title>
    title = page.locator('#topology g.link-group[data-link="gw-a|gw-b"] title')
    assert re.search(r"direct UDP, RTT 4\.2 ms", title.text_content() or "")
    # subnets drawn next to their gateway
    expect(page.locator('#topology g.node[data-node="gw-c"] text.subnets')).to_have_text(
        "10.3.0.0/24, 10.1.0.0/16"
    )
    cookie = next(c for c in page.context.cookies() if c["name"] == "wgmesh_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert coordinator.admin_token not in cookie["value"]
    expect(page.locator("#live")).to_have_text("live")
    shoot(page, screenshots, "dashboard-topology")
    page.emulate_media(color_scheme="dark")
    expect(page.locator("body")).to_have_css("background-color", "rgb(15, 17, 21)")
    shoot(page, screenshots, "dashboard-dark")


def test_open_node_details(dashboard: Any, screenshots: Path | None) -> None:
    page = dashboard
    page.locator('#topology g.node[data-node="gw-a"] circle').click()
    details = page.locator("#details")
    expect(details).to_be_visible()
    expect(page.locator("#details-title")).to_have_text("gw-a")
    fields = page.locator("#details-fields")
    expect(fields).to_contain_text("172.16.1.10")  # eth0
    expect(fields).to_contain_text("127.0.0.1")  # public IP as the coordinator saw it
    expect(fields).to_contain_text("198.18.0.11:51820")
    expect(details.locator('tr[data-peer="gw-b"]')).to_contain_text("direct UDP")
    expect(details.locator('tr[data-peer="gw-b"]')).to_contain_text("4.2 ms")
    expect(details.locator('tr[data-peer="gw-b"]')).to_contain_text("120.6 KiB / 639.0 KiB")
    expect(details.locator('tr[data-peer="gw-c"]')).to_contain_text("relayed TCP")
    expect(page.locator("#details-routes")).to_contain_text("10.1.0.0/24")
    shoot(page, screenshots, "dashboard-node-details")
    # keyboard: Escape closes, Enter on a focused node opens
    page.keyboard.press("Escape")
    expect(details).to_be_hidden()
    page.locator('#topology g.node[data-node="gw-b"]').focus()
    expect(page.locator('#topology g.node[data-node="gw-b"]')).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#details-title")).to_have_text("gw-b")


def test_node_details_and_header_show_the_mtus(dashboard: Any, admin: httpx.Client) -> None:
    page = dashboard
    expect(page.locator("#network-name")).to_contain_text("MTU 1420")
    page.locator('#topology g.node[data-node="gw-a"] circle').click()
    fields = page.locator("#details-fields")

    def field(label: str) -> Any:
        return fields.locator("dt", has_text=label).locator("xpath=following-sibling::dd[1]")

    expect(field("Tunnel MTU")).to_have_text("1380")  # what the agent set, from its report
    expect(field("MTU ceiling")).to_have_text("network default (1420)")
    expect(field("Underlay max MTU")).to_have_text("1400")
    expect(field("Agent version")).to_have_text("0.2.0")  # from its report too
    try:
        # changes made elsewhere arrive live (a version bump, then the event stream)
        assert admin.patch("/api/v1/nodes/gw-a", json={"mtu": 1300}).status_code == 200
        expect(field("MTU ceiling")).to_have_text("1300")
        assert admin.patch("/api/v1/network", json={"mtu": 1400}).status_code == 200
        expect(page.locator("#network-name")).to_contain_text("MTU 1400")
    finally:
        assert admin.patch("/api/v1/nodes/gw-a", json={"mtu": None}).status_code == 200
        assert admin.patch("/api/v1/network", json={"mtu": 1420}).status_code == 200
    expect(field("MTU ceiling")).to_have_text("network default (1420)")
    # a node that never reported has no tunnel MTU to show
    page.locator('#topology g.node[data-node="gw-d"] circle').click()
    expect(field("Tunnel MTU")).to_have_text(EN_DASH)
    expect(field("Underlay max MTU")).to_have_text(EN_DASH)
    expect(field("Agent version")).to_have_text("unknown")


def test_mtu_ceiling_and_network_default_are_set_from_the_dashboard(
    dashboard: Any, admin: httpx.Client
) -> None:
    page = dashboard
    page.locator('#topology g.node[data-node="gw-b"] circle').click()
    try:
        page.locator("#details-mtu").fill("1360")
        page.locator("#details-mtu-form button").click()
        expect(page.locator("#action-status")).to_have_text("MTU ceiling of gw-b is now 1360.")
        assert admin.get("/api/v1/nodes/gw-b").json()["mtu"] == 1360
        page.locator("#details-mtu").fill("")  # empty: back to the network's default
        page.locator("#details-mtu-form button").click()
        expect(page.locator("#action-status")).to_have_text("gw-b uses the network's default MTU again.")
        assert admin.get("/api/v1/nodes/gw-b").json()["mtu"] is None
        # Out of range: the form says so and sends nothing.
        page.locator("#details-mtu").fill("900")
        page.locator("#details-mtu-form button").click()
        assert page.locator("#details-mtu").evaluate("e => !e.checkValidity()")
        assert admin.get("/api/v1/nodes/gw-b").json()["mtu"] is None

        page.locator("#network-mtu").fill("1400")
        page.locator("#network-mtu-form button").click()
        expect(page.locator("#action-status")).to_have_text("The network's default MTU is now 1400.")
        assert admin.get("/api/v1/network").json()["mtu"] == 1400
        expect(page.locator("#network-name")).to_contain_text("MTU 1400")
    finally:
        assert admin.patch("/api/v1/nodes/gw-b", json={"mtu": None}).status_code == 200
        assert admin.patch("/api/v1/network", json={"mtu": 1420}).status_code == 200


def test_p2p_off_changes_the_api_state(dashboard: Any, admin: httpx.Client) -> None:
    page = dashboard
    page.get_by_label("P2P policy of gw-b").select_option("off")
    expect(page.locator("#action-status")).to_have_text("P2P for gw-b is now off.")
    assert admin.get("/api/v1/nodes/gw-b").json()["p2p"] == "off"
    page.get_by_label("P2P policy of gw-b").select_option("auto")
    expect(page.locator("#action-status")).to_have_text("P2P for gw-b is now auto.")
    assert admin.get("/api/v1/nodes/gw-b").json()["p2p"] == "auto"
    # per pair, from the details panel
    page.locator('#topology g.node[data-node="gw-a"] circle').click()
    page.get_by_label("P2P override for gw-a and gw-c").select_option("off")
    expect(page.locator("#action-status")).to_have_text("P2P between gw-a and gw-c is now off.")
    pairs = admin.get("/api/v1/pairs").json()["pairs"]
    assert any({p["a"], p["b"]} == {"gw-a", "gw-c"} and p["p2p"] == "off" for p in pairs), pairs
    page.get_by_label("P2P override for gw-a and gw-c").select_option("")
    expect(page.locator("#action-status")).to_contain_text("cleared")
    assert not admin.get("/api/v1/pairs").json()["pairs"]


def test_create_and_revoke_a_token(dashboard: Any, admin: httpx.Client, screenshots: Path | None) -> None:
    page = dashboard
    page.get_by_label("Description").fill("site-e in eu-west")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#token-secret-value")
    expect(secret).not_to_be_empty()
    token = secret.text_content() or ""
    created = [
        t for t in admin.get("/api/v1/tokens").json()["tokens"] if t["description"] == "site-e in eu-west"
    ]
    assert len(created) == 1 and not created[0]["revoked"]
    assert token not in page.locator("#tokens-table").inner_text()  # the list never shows secrets
    shoot(page, screenshots, "dashboard-tokens")
    page.get_by_role("button", name="Done").click()
    expect(page.locator("#token-secret")).to_be_hidden()
    tid = created[0]["id"]
    page.get_by_role("button", name=f"Revoke token {tid}").click()
    expect(page.locator(f'#tokens-table tr[data-token="{tid}"]')).to_have_attribute("data-state", "revoked")
    assert next(t for t in admin.get("/api/v1/tokens").json()["tokens"] if t["id"] == tid)["revoked"]
    # the token the dashboard shows carries the coordinator's pin
    assert JoinToken.parse(token).pin is not None
    with httpx.Client(
        base_url=admin.base_url, trust_env=False, verify=False
    ) as anon:  # revoked: no secret at stake
        r = anon.post("/api/v1/enroll", json={"token": token, "name": "site-e", "public_key": "x" * 44})
    assert r.status_code in (400, 401, 422), r.text


def test_conflicting_route_is_flagged(dashboard: Any, screenshots: Path | None) -> None:
    page = dashboard
    row = page.locator('#routes [data-gateway="gw-c"] tr[data-prefix="10.1.0.0/16"]')
    expect(row).to_have_attribute("data-state", "conflict")
    expect(row).to_contain_text("overlaps 10.1.0.0/24@gw-a")
    expect(page.locator("#warnings")).to_contain_text("route 10.1.0.0/16@gw-c is inactive")
    expect(page.locator("#warning-count")).not_to_be_empty()
    shadowed = page.locator('#routes [data-gateway="gw-d"] tr[data-prefix="10.4.0.0/24"]')
    expect(shadowed).to_have_class(re.compile(r"\bis-shadowed\b"))
    expect(shadowed).to_contain_text("gw-a does not install it: overlaps 10.4.0.0/16 on lan")
    expect(page.locator("#warnings")).to_contain_text("gw-a does not install 10.4.0.0/24")
    page.locator("#routes-section").scroll_into_view_if_needed()
    shoot(page, screenshots, "dashboard-routes")


def test_a_route_shadowed_without_a_named_gateway_is_shown_from_the_api(
    page: Any, coordinator: Coordinator, mesh: Mesh
) -> None:
    """The dashboard shows the coordinator's `shadowed_by`: a shadow whose agent did not know the
    gateway matches the route by prefix (the join is the coordinator's, not the page's)."""
    assert coordinator.admin_token is not None
    c = mesh.nodes["gw-c"]
    post_status(
        coordinator,
        c,
        {"eth0_ip": "172.16.3.10", "shadowed": [{"prefix": "10.2.0.0/24", "interface": "eth9"}]},
    )
    try:
        login(page, coordinator.url, coordinator.admin_token)
        row = page.locator('#routes [data-gateway="gw-b"] tr[data-prefix="10.2.0.0/24"]')
        expect(row).to_have_class(re.compile(r"\bis-shadowed\b"))
        expect(row).to_contain_text("gw-c does not install it: overlaps a local subnet on eth9")
        expect(row.locator(".pill.shadowed")).to_be_visible()
    finally:
        post_status(coordinator, c, {"eth0_ip": "172.16.3.10", "peers": []})


def test_a_pending_route_is_approved_and_another_rejected_from_the_dashboard(
    dashboard: Any, coordinator: Coordinator, mesh: Mesh, admin: httpx.Client
) -> None:
    """Issue 16: a node's public prefixes wait for an admin; the dashboard shows them with buttons."""
    page = dashboard
    with coordinator.anonymous() as anon:
        enroll(anon, mesh.token, "gw-public", subnets=["203.0.113.20/32", "203.0.113.21/32"])
    first = page.locator('#routes [data-gateway="gw-public"] tr[data-prefix="203.0.113.20/32"]')
    second = page.locator('#routes [data-gateway="gw-public"] tr[data-prefix="203.0.113.21/32"]')
    expect(first).to_have_attribute("data-state", "pending")
    expect(first).to_contain_text("outside private, CGNAT and ULA space")
    expect(page.locator("#warnings")).to_contain_text("route 203.0.113.20/32@gw-public is pending approval")
    page.get_by_role("button", name="Approve 203.0.113.20/32 of gw-public").click()
    page.locator("#confirm").get_by_role("button", name="Approve").click()
    expect(first).to_have_attribute("data-state", "active")
    expect(first).to_contain_text("approved by session:env")
    page.get_by_role("button", name="Reject 203.0.113.21/32 of gw-public").click()
    page.locator("#confirm").get_by_role("button", name="Reject").click()
    expect(second).to_have_attribute("data-state", "rejected")
    expect(second.get_by_role("button")).to_have_count(0)
    routes = {
        r["prefix"]: r for r in admin.get("/api/v1/routes").json()["routes"] if r["gateway"] == "gw-public"
    }
    assert [routes[p]["state"] for p in ("203.0.113.20/32", "203.0.113.21/32")] == ["active", "rejected"]
    assert admin.delete("/api/v1/nodes/gw-public").status_code == 200


def test_nodes_table_sorts_and_filters(dashboard: Any) -> None:
    page = dashboard
    rows = page.locator("#nodes-table tbody tr")
    expect(rows).to_have_count(len(GATEWAYS))
    page.get_by_role("button", name="Name").click()  # already ascending: now descending
    expect(rows.first).to_have_attribute("data-node", "gw-d")
    page.get_by_label("Filter nodes").fill("10.2.0")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-node", "gw-b")


def test_change_arrives_live(dashboard: Any, coordinator: Coordinator, mesh: Mesh) -> None:
    page = dashboard
    expect(page.locator("#live")).to_have_text("live")
    with coordinator.anonymous() as anon:
        enroll(anon, mesh.token, "gw-live", subnets=["10.9.0.0/24"])
    expect(page.locator('#topology g.node[data-node="gw-live"]')).to_be_visible()
    expect(page.locator('#nodes-table tr[data-node="gw-live"]')).to_be_visible()


def test_delete_node_with_confirmation(
    dashboard: Any, coordinator: Coordinator, mesh: Mesh, admin: httpx.Client
) -> None:
    page = dashboard
    with coordinator.anonymous() as anon:
        enroll(anon, mesh.token, "gw-gone")
    page.get_by_role("button", name="Delete node gw-gone").click()
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert admin.get("/api/v1/nodes/gw-gone").status_code == 200
    page.get_by_role("button", name="Delete node gw-gone").click()
    dialog.get_by_role("button", name="Delete gw-gone").click()
    expect(page.locator('#nodes-table tr[data-node="gw-gone"]')).to_have_count(0)
    assert admin.get("/api/v1/nodes/gw-gone").status_code == 404


def test_logout_ends_the_session(dashboard: Any, coordinator: Coordinator) -> None:
    page = dashboard
    cookie = next(c for c in page.context.cookies() if c["name"] == "wgmesh_session")
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#login-error")).to_have_text("Logged out.")
    # the old cookie value is dead on the server, not just removed from the browser
    with httpx.Client(
        base_url=coordinator.url,
        trust_env=False,
        verify=coordinator.verify,
        cookies={"wgmesh_session": cookie["value"]},
    ) as c:
        assert c.get("/api/v1/nodes").status_code == 401
    page.reload()
    expect(page.locator("#login-view")).to_be_visible()


def test_disconnected_state_is_shown(dashboard: Any) -> None:
    page = dashboard
    expect(page.locator("#live")).to_have_text("live")
    # cut the event stream: every (re)connection fails until the route is lifted
    page.route("**/api/v1/events", lambda route: route.abort())
    page.evaluate("() => startEvents()")
    expect(page.locator("#live")).to_have_text("disconnected, retrying…")
    expect(page.locator("#live")).to_have_attribute("data-state", "retrying")
    page.unroute("**/api/v1/events")
    expect(page.locator("#live")).to_have_text("live")


def test_an_aliased_route_shows_where_it_is_reached(dashboard: Any, admin: httpx.Client) -> None:
    """Issue 20: gw-c's conflicting 10.1.0.0/16 published under an alias is active, shown with its alias,
    and its warning goes; without the alias it is the conflict again."""
    page = dashboard
    row = page.locator('#routes [data-gateway="gw-c"] tr[data-prefix="10.1.0.0/16"]')
    expect(row).to_have_attribute("data-state", "conflict")
    expect(row).to_contain_text("wgmesh routes alias 10.1.0.0/16 --node gw-c --as PREFIX")
    body: dict[str, str | None] = {"prefix": "10.1.0.0/16", "alias": "10.201.0.0/16"}
    assert admin.post("/api/v1/nodes/gw-c/routes/alias", json=body).status_code == 200
    try:
        expect(row).to_have_attribute("data-state", "active")
        expect(row).to_have_attribute("data-alias", "10.201.0.0/16")
        expect(row.locator("td").first).to_have_text("10.1.0.0/16 as 10.201.0.0/16")
        expect(page.locator("#warnings")).not_to_contain_text("route 10.1.0.0/16@gw-c is inactive")
    finally:
        body["alias"] = None
        assert admin.post("/api/v1/nodes/gw-c/routes/alias", json=body).status_code == 200
    expect(row).to_have_attribute("data-state", "conflict")
