"""Text a node reported before the API refused control characters (written into the database with SQL)
is shown escaped by the dashboard, as `wgmesh status` shows it (wgmesh/web/app.js `visible`)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import httpx
import pytest
from coordinator_harness import SHOWN, Coordinator, create_token, hostile, post_status, write_report
from web_harness import Mesh, login

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
from playwright.sync_api import expect


def test_stored_control_characters_are_shown_escaped(
    page: Any, coordinator: Coordinator, admin: httpx.Client, mesh: Mesh
) -> None:
    assert coordinator.admin_token is not None
    c = mesh.nodes["gw-c"]
    post_status(coordinator, c, {"shadowed": [{"prefix": "10.2.0.0/24", "interface": "eth9"}]})
    write_report(
        coordinator.db, c.node_id, {"shadowed": [{"prefix": "10.2.0.0/24", "interface": hostile("eth9")}]}
    )
    token = create_token(admin, description="site-x")
    with closing(sqlite3.connect(coordinator.db)) as conn, conn:
        conn.execute("UPDATE tokens SET description = ? WHERE id = ?", (hostile("site-x"), token["id"]))
    try:
        login(page, coordinator.url, coordinator.admin_token)
        row = page.locator('#routes [data-gateway="gw-b"] tr[data-prefix="10.2.0.0/24"]')
        expect(row).to_contain_text(f"on {SHOWN[0]}eth9{SHOWN[1]}x{SHOWN[2]}")
        tokens = page.locator(f'#tokens-table tr[data-token="{token["id"]}"]')
        expect(tokens).to_contain_text(f"{SHOWN[0]}site-x{SHOWN[1]}x{SHOWN[2]}")
        for text in (row.text_content() or "", tokens.text_content() or ""):
            assert not {"\x1b", "\x07", "\r"} & set(text), repr(text)
    finally:
        post_status(coordinator, c, {"eth0_ip": "172.16.3.10", "peers": []})
        admin.delete(f"/api/v1/tokens/{token['id']}")
