"""The topology summary and pages from reports that leave nominal peers out (agent/reporting.condense), as
agents of more than 50 peers send them: the same link states as the reports give whole (tests/large_mesh
works them out by hand), read back from the database as the coordinator stores them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import large_mesh
import pytest
from coordinator_harness import Api

N = 120
PEERS = 70


@pytest.fixture(scope="module")
def mesh(coordinator: Api) -> large_mesh.LargeMesh:
    return large_mesh.fill_database(coordinator.db_url, N, peers_per_node=PEERS, condensed=True)


def get(admin: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    r = admin.get(path, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_the_reports_are_stored_condensed(admin: httpx.Client, mesh: large_mesh.LargeMesh) -> None:
    statuses = get(admin, "/api/v1/statuses")["statuses"]
    assert statuses and all(s["report"]["nominal"]["count"] > 0 for s in statuses)
    assert all(len(s["report"]["peers"]) < PEERS / 2 for s in statuses)


def test_link_counts_and_a_nodes_links_are_those_of_the_reports(
    admin: httpx.Client, mesh: large_mesh.LargeMesh
) -> None:
    states = {(i, j): large_mesh.expected_state(mesh, i, j, N) for i in range(N) for j in range(i + 1, N)}
    want = Counter(states.values())
    summary = get(admin, "/api/v1/topology/summary")
    assert summary["links"] == {
        k.replace("-", "_"): want[k] for k in ("direct", "tcp-direct", "relay", "down", "unknown")
    }
    assert all(summary["links"][k] > 0 for k in ("direct", "relay", "down", "unknown"))
    for i in (0, 5, 61):
        page = get(admin, f"/api/v1/topology/nodes/{mesh.names[i]}/links", limit=500)
        got = {row["b"]: row["path"] for row in page["links"]}
        assert got == {mesh.names[j]: states[(min(i, j), max(i, j))] for j in range(N) if j != i}
    # One node's view with its peers (the CLI's `wgmesh status NODE`): the nominal ones are there, direct.
    node = get(admin, f"/api/v1/topology/nodes/{mesh.names[0]}")
    paths = Counter(p["path"] for p in node["peers"])
    assert paths["direct"] > PEERS / 2 and paths["relay"] > 0
