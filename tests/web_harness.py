"""Helpers for the dashboard tests: an enrolled mesh with every link path, and the browser's login.

The mesh is made through the real API only: a token, nodes enrolled with their own key pairs
(wgmesh.keys), and status reports sent with each node's credential so that links get paths.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from coordinator_harness import Coordinator, Enrolled, create_token, enroll, post_status

from wgmesh.pins import Pin

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# gateway -> subnets; gw-c's 10.1.0.0/16 overlaps gw-a's 10.1.0.0/24: a conflict the dashboard must flag
GATEWAYS = {
    "gw-a": ["10.1.0.0/24"],
    "gw-b": ["10.2.0.0/24"],
    "gw-c": ["10.3.0.0/24", "10.1.0.0/16"],
    "gw-d": ["10.4.0.0/24"],
}
# the expected path of every pair after build_mesh
PATHS = {
    ("gw-a", "gw-b"): "direct",
    ("gw-a", "gw-c"): "relay",
    ("gw-b", "gw-c"): "down",
    ("gw-a", "gw-d"): "unknown",
    ("gw-b", "gw-d"): "unknown",
    ("gw-c", "gw-d"): "unknown",
}


@dataclass
class Mesh:
    nodes: dict[str, Enrolled]
    token: str


def _peer(node: Enrolled, path: str | None, handshake: datetime, rtt: float | None) -> dict[str, Any]:
    return {
        "public_key": node.keypair.public_key,
        "path": path,
        "rtt_ms": rtt,
        "last_handshake": handshake.isoformat(),
        "rx_bytes": 123_456,
        "tx_bytes": 654_321,
    }


def build_mesh(coordinator: Coordinator, admin: httpx.Client) -> Mesh:
    """Enroll GATEWAYS and report statuses that give the links in PATHS."""
    # Its nodes' subnets inside 10/8 are approved by the token (issue 16: pending otherwise).
    token = create_token(admin, reusable=True, description="web tests", allow_subnets=["10.0.0.0/8"])["token"]
    nodes: dict[str, Enrolled] = {}
    with coordinator.anonymous() as anon:
        for i, (name, subnets) in enumerate(GATEWAYS.items(), start=1):
            nodes[name] = enroll(anon, token, name, subnets=subnets, endpoints=[f"198.18.0.{10 + i}:51820"])
    now = datetime.now(UTC)
    a, b, c = nodes["gw-a"], nodes["gw-b"], nodes["gw-c"]
    post_status(
        coordinator,
        a,
        {
            "eth0_ip": "172.16.1.10",
            "endpoints": ["198.18.0.11:51820"],
            # its underlay carries 1400, and its agent set 1380 on the interface
            "mtu": 1380,
            "max_mtu": 1400,
            "agent_version": "0.2.0",
            "peers": [_peer(b, "direct", now, 4.2), _peer(c, "relay", now, 21.5)],
            # gw-a's own VPC also holds 10.4.0.0/16, so it does not install gw-d's route
            "shadowed": [
                {
                    "prefix": "10.4.0.0/24",
                    "gateway": "gw-d",
                    "interface": "lan",
                    "local_prefix": "10.4.0.0/16",
                }
            ],
        },
    )
    stale = now - timedelta(hours=1)
    post_status(coordinator, b, {"eth0_ip": "172.16.2.10", "peers": [_peer(c, "direct", stale, None)]})
    post_status(coordinator, c, {"eth0_ip": "172.16.3.10", "peers": []})
    return Mesh(nodes=nodes, token=token)


NAVIGATION_ATTEMPTS = 3


def open_page(page: Any, url: str) -> None:
    """`page.goto(url)`, again when Chromium aborted it with ERR_NETWORK_CHANGED.

    Chromium watches the host's links and addresses over netlink and aborts in-flight loads when they
    change, even for a page on 127.0.0.1; a lab or a VM starting elsewhere on the machine adds and removes
    links in the root namespace (CI run 17 lost a login that way). A browser shows its error page and
    reloads; so does this, a bounded number of times. Any other error, a certificate refused included, is
    raised at once.
    """
    for attempt in range(1, NAVIGATION_ATTEMPTS + 1):
        try:
            page.goto(url)
            return
        except Exception as exc:
            if "ERR_NETWORK_CHANGED" not in str(exc) or attempt == NAVIGATION_ATTEMPTS:
                raise


def login(page: Any, url: str, token: str) -> None:
    """Open the dashboard and log in with `token`; returns once the topology is drawn."""
    open_page(page, url + "/")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.locator("#app-view").wait_for(state="visible")
    page.locator("#topology g.node").first.wait_for()


def shoot(page: Any, directory: Path | None, name: str) -> None:
    """Save a screenshot when screenshots were asked for (WGMESH_SCREENSHOTS)."""
    if directory is not None:
        page.screenshot(path=str(directory / f"{name}.png"), full_page=False)


def spki_list(pins: Sequence[Pin]) -> str:
    """Chromium's own form of key pins: base64 of the same SHA-256 of the SubjectPublicKeyInfo."""
    return ",".join(base64.b64encode(pin.digest).decode() for pin in pins)


@contextmanager
def chromium(pins: Sequence[Pin], executable: str = CHROMIUM) -> Iterator[Any]:
    """Debian's headless Chromium under Playwright, trusting exactly the coordinator keys `pins` name (a
    certificate error for another key still fails the page); skips the test when either is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
    if shutil.which(executable) is None:
        pytest.skip(f"{executable} is not installed (make setup installs Debian's chromium)")
    with sync_api.sync_playwright() as pw:
        args = [*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_list(pins)}"]
        browser = pw.chromium.launch(executable_path=executable, args=args, headless=True)
        try:
            yield browser
        finally:
            browser.close()
