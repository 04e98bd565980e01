"""Thirty gateways: every node and link drawn, and no two node labels overlapping."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from coordinator_harness import Coordinator, Enrolled, create_token, enroll, post_status
from web_harness import login, shoot

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
from playwright.sync_api import expect

GATEWAYS = 30


@pytest.fixture(scope="module")
def big_mesh(coordinator: Coordinator) -> list[Enrolled]:
    with coordinator.admin() as admin, coordinator.anonymous() as anon:
        token = create_token(admin, reusable=True, allow_subnets=["10.0.0.0/8", "172.20.0.0/16"])["token"]
        nodes = [
            enroll(anon, token, f"gw-{i:02d}-region", subnets=[f"10.{i}.0.0/16", f"172.20.{i}.0/24"])
            for i in range(GATEWAYS)
        ]
    now = datetime.now(UTC).isoformat()
    for i, node in enumerate(nodes):
        peers = [
            {
                "public_key": other.keypair.public_key,
                "path": "relay" if (i + j) % 3 == 0 else "direct",
                "last_handshake": now,
                "rtt_ms": float(j),
            }
            for j, other in enumerate(nodes)
            if other is not node and j % 2 == i % 2
        ]
        post_status(coordinator, node, {"peers": peers})
    return nodes


Quad = list[tuple[float, float]]

LABEL_CORNERS = """() => [...document.querySelectorAll('#topology g.node text')].map((t) => {
  const b = t.getBBox();
  const m = t.getScreenCTM();
  return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]]
    .map(([x, y]) => { const p = new DOMPoint(x, y).matrixTransform(m); return [p.x, p.y]; });
})"""


def overlaps(a: Quad, b: Quad) -> bool:
    """Whether two convex quadrilaterals (rotated label boxes on screen) overlap (separating axes)."""
    for quad in (a, b):
        for i in range(4):
            (x1, y1), (x2, y2) = quad[i], quad[(i + 1) % 4]
            nx, ny = y2 - y1, x1 - x2
            pa = [nx * x + ny * y for x, y in a]
            pb = [nx * x + ny * y for x, y in b]
            if max(pa) <= min(pb) or max(pb) <= min(pa):
                return False
    return True


def height(q: Quad) -> float:
    return float(((q[3][0] - q[0][0]) ** 2 + (q[3][1] - q[0][1]) ** 2) ** 0.5)


def test_thirty_gateways_are_legible(
    page: Any, coordinator: Coordinator, big_mesh: list[Enrolled], screenshots: Path | None
) -> None:
    assert coordinator.admin_token is not None
    login(page, coordinator.url, coordinator.admin_token)
    expect(page.locator("#topology g.node")).to_have_count(GATEWAYS)
    expect(page.locator("#topology g.link-group")).to_have_count(GATEWAYS * (GATEWAYS - 1) // 2)
    expect(page.locator('#topology g.link-group[data-path="relay"]').first).to_be_attached()
    expect(page.locator('#topology g.link-group[data-path="direct"]').first).to_be_attached()
    boxes = [[(float(x), float(y)) for x, y in quad] for quad in page.evaluate(LABEL_CORNERS)]
    assert len(boxes) == 2 * GATEWAYS  # a name and a subnet line per gateway
    clashes = [
        (i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if overlaps(boxes[i], boxes[j])
    ]
    shoot(page, screenshots, "dashboard-30-gateways")
    assert not clashes, f"{len(clashes)} overlapping labels"
    assert min(height(b) for b in boxes) >= 10, "labels too small to read"
    with httpx.Client(base_url=coordinator.url, trust_env=False, verify=coordinator.verify) as anon:
        assert anon.get("/healthz").status_code == 200
