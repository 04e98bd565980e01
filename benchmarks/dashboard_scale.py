"""The dashboard and `wgmesh status` at 100 and 1,000 gateways (issue 19; goal at 1,000: page load and update
≤ 2 s in Chromium, `wgmesh status` ≤ 2 s).

Run: `nice -n 10 .venv/bin/python benchmarks/dashboard_scale.py [--sizes 100 1000] [--peers N] [--whole-peers]`.
Per size, a real coordinator process on SQLite, its registry generated straight into the database
(tests/large_mesh.py: tags, sites, conflicts, offline gateways, and a status report per online gateway
naming `--peers` peers, every other gateway by default: a full mesh; above 50 peers condensed as the agent
sends it, the nominal peers as ranges of node ids, unless `--whole-peers`), then:
- the API: the summary cold (every report parsed) and warm, again after 100 reports changed (a second of
  reports at 1,000 gateways) once its link counts are due (LINK_COUNT_TTL), a page of nodes, one node's
  links; /api/v1/topology (the full document)
  only up to --full-max nodes;
- Chromium (Debian's, headless, under Playwright): from "Log in" to the summary and the first page of
  nodes drawn (page load), and from an admin change (a node's tags) to the page showing it (update);
- `wgmesh status` (the summary above 50 nodes), `--nodes --problem links_down` and `--links NODE`, each a
  fresh CLI process, as a user runs it; `wgmesh --help` for the interpreter's and the CLI's start-up alone.
Prints a table per size and the ratios between the largest and the smallest size.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

import large_mesh  # noqa: E402  (tests/ on the path above)
from cli_harness import ENTRY, base_env  # noqa: E402
from coordinator_harness import Coordinator, running  # noqa: E402
from sqlalchemy import update  # noqa: E402
from web_harness import chromium, open_page  # noqa: E402

from wgmesh.coordinator import schema  # noqa: E402
from wgmesh.coordinator.registry import LINK_COUNT_TTL  # noqa: E402
from wgmesh.coordinator.store import Store  # noqa: E402
from wgmesh.topology_summary import FULL_VIEW_MAX  # noqa: E402

GOAL = 2.0
CHANGED_REPORTS = 100


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def api_figures(c: Coordinator, n: int, full_max: int) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    with c.admin() as admin:
        for label in ("summary cold", "summary warm"):
            figures[label], r = timed(lambda: admin.get("/api/v1/topology/summary", timeout=600))
            assert r.status_code == 200, r.text
        store = Store(c.db_url)
        try:
            with store.write(bump=False) as w:
                w.conn.execute(
                    update(schema.status)
                    .where(schema.status.c.node_id <= CHANGED_REPORTS)
                    .values(reported_at=datetime.now(UTC))
                )
        finally:
            store.close()
        # Link counts stand LINK_COUNT_TTL while the same nodes exist: past it, the summary parses the new
        # reports and counts again.
        time.sleep(LINK_COUNT_TTL.total_seconds())
        figures[f"summary recount, {CHANGED_REPORTS} reports new"], r = timed(
            lambda: admin.get("/api/v1/topology/summary")
        )
        figures["nodes page (50)"], r = timed(
            lambda: admin.get("/api/v1/topology/nodes", params={"problem": "links_down", "limit": 50})
        )
        assert r.status_code == 200, r.text
        figures["links of a node (50)"], r = timed(
            lambda: admin.get(f"/api/v1/topology/nodes/{large_mesh.name(7)}/links", params={"limit": 50})
        )
        assert r.status_code == 200, r.text
        if n <= full_max:
            figures["/topology (full)"], r = timed(lambda: admin.get("/api/v1/topology", timeout=600))
            assert r.status_code == 200, r.text
        else:
            figures["/topology (full)"] = None
    return figures


def browser_figures(c: Coordinator, n: int) -> dict[str, float | None]:
    from playwright.sync_api import expect  # noqa: PLC0415  (web_harness skips when it is missing)

    assert c.admin_token is not None
    figures: dict[str, float | None] = {}
    with chromium([c.pin]) as browser:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.set_default_timeout(120_000)
        page = context.new_page()
        open_page(page, c.url + "/")
        page.get_by_label("Admin token").fill(c.admin_token)
        start = time.perf_counter()
        page.get_by_role("button", name="Log in").click()
        if n > FULL_VIEW_MAX:
            page.locator("#drill-nodes-table tbody tr[data-node]").first.wait_for()
            page.locator('[data-field="links"]').wait_for()
        else:
            page.locator("#topology g.node").first.wait_for()
        figures["page load"] = time.perf_counter() - start
        tag = "cloud:benchmark"
        before = page.locator("body").get_attribute("data-version")
        with c.admin() as admin:
            start = time.perf_counter()
            r = admin.patch(f"/api/v1/nodes/{large_mesh.name(0)}", json={"tags": [tag]})
            assert r.status_code == 200, r.text
            if n > FULL_VIEW_MAX:
                expect(page.locator("#summary-tags").get_by_role("button", name=tag)).to_be_visible(
                    timeout=120_000
                )
            else:
                expect(page.locator("body")).not_to_have_attribute("data-version", before, timeout=120_000)
        figures["update (admin change shown)"] = time.perf_counter() - start
        context.close()
    return figures


def cli_figures(c: Coordinator, home: Path) -> dict[str, float | None]:
    env = base_env(home)
    env.update({"WGMESH_URL": c.url, "WGMESH_TOKEN": c.admin_token or "", "WGMESH_PIN": str(c.pin)})
    figures: dict[str, float | None] = {}
    for label, args in (
        ("wgmesh --help (the CLI's start-up alone)", ["--help"]),
        ("wgmesh status", ["status"]),
        ("wgmesh status --nodes --problem links_down", ["status", "--nodes", "--problem", "links_down"]),
        ("wgmesh status --links NODE", ["status", "--links", large_mesh.name(7)]),
    ):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", ENTRY, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        figures[label] = time.perf_counter() - start
        assert done.returncode == 0, done.stderr
    return figures


def run(n: int, peers: int | None, full_max: int, *, condensed: bool = True) -> dict[str, float | None]:
    with tempfile.TemporaryDirectory(prefix="wgmesh-dash-bench-") as tmp:
        tmp_path = Path(tmp)
        with running(Coordinator(db=tmp_path / "c.db", log=tmp_path / "c.log")) as c:
            store = Store(c.db_url)
            try:
                fill_time, _ = timed(
                    lambda: large_mesh.fill(store, n, peers_per_node=peers or n - 1, condensed=condensed)
                )
            finally:
                store.close()
            print(f"  {n} gateways generated in {fill_time:.1f} s", flush=True)
            figures = api_figures(c, n, full_max)
            figures.update(browser_figures(c, n))
            home = tmp_path / "home"
            home.mkdir()
            figures.update(cli_figures(c, home))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--peers", type=int, default=None, help="peers each report names (default: all)")
    parser.add_argument("--full-max", type=int, default=200, help="time /api/v1/topology up to this size")
    parser.add_argument(
        "--whole-peers", action="store_true", help="reports list every peer, as agents before they condensed"
    )
    args = parser.parse_args()
    results: dict[int, dict[str, float | None]] = {}
    for n in args.sizes:
        print(f"size {n}:", flush=True)
        results[n] = run(n, args.peers, args.full_max, condensed=not args.whole_peers)
    labels = list(results[args.sizes[0]])
    head = f"{'figure (seconds)':45}" + "".join(f"{n:>10}" for n in args.sizes)
    small, large = min(args.sizes), max(args.sizes)
    print()
    print(head + (f"{'ratio':>8}" if large != small else ""))
    for label in labels:
        row = f"{label:45}"
        for n in args.sizes:
            v = results[n][label]
            row += f"{'—' if v is None else f'{v:.3f}':>10}"
        a, b = results[small][label], results[large][label]
        if large != small:
            row += f"{'—' if a is None or b is None or a == 0 else f'{b / a:.1f}x':>8}"
        print(row)
    goals = ("page load", "update (admin change shown)", "wgmesh status")
    verdict = [
        f"{g} {results[large][g]:.2f} s {'≤' if (results[large][g] or 0) <= GOAL else '>'} {GOAL} s"
        for g in goals
    ]
    print(f"\nat {large} gateways: " + "; ".join(verdict))


if __name__ == "__main__":
    main()
