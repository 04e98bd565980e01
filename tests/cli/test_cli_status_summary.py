"""`wgmesh status` on a generated registry of 120 gateways (tests/large_mesh): the summary first (counts,
problems with the command that lists them, groups by tag), then the details it names: --nodes with
filters and pages, --problems, --links NODE, --all; --json keeps today's contract and gives the pages'."""

from __future__ import annotations

import json
import re
from collections import Counter

import large_mesh
import pytest
from cli_harness import Cli
from coordinator_harness import Coordinator

N = 120
PEERS = 30


@pytest.fixture(scope="module")
def mesh(coordinator: Coordinator) -> large_mesh.LargeMesh:
    return large_mesh.fill_database(coordinator.db_url, N, peers_per_node=PEERS)


def link_states(mesh: large_mesh.LargeMesh) -> Counter[str]:
    return Counter(large_mesh.expected_state(mesh, i, j, N) for i in range(N) for j in range(i + 1, N))


def test_status_prints_the_summary_of_a_large_network(wgmesh: Cli, mesh: large_mesh.LargeMesh) -> None:
    r = wgmesh("status")
    assert r.code == 0, r.err
    want = link_states(mesh)
    text = r.out
    assert f"Nodes      {N} ({N - len(mesh.offline)} online, {len(mesh.offline)} offline)" in text
    total = N * (N - 1) // 2
    links = f"Links      {total}: {want['direct']} direct, {want['relay']} relay, {want['down']} down, {want['unknown']} unknown"
    assert links in text
    assert re.search(
        rf"links down\s+{want['down']} links on \d+ nodes\s+wgmesh status --nodes --problem links_down", text
    )
    assert re.search(rf"offline\s+{len(mesh.offline)} nodes\s+wgmesh status --nodes --problem offline", text)
    aws = len([i for i in range(N) if i % 3 == 0])
    assert re.search(rf"cloud:aws\s+{aws}\s", text)
    assert "wgmesh status --nodes" in text and "--links NODE" in text
    assert "gw-0005" not in text  # no node listing: the summary only


def test_status_nodes_filters_and_pages(wgmesh: Cli, mesh: large_mesh.LargeMesh) -> None:
    r = wgmesh("status", "--nodes", "--problem", "offline")
    assert r.code == 0, r.err
    offline = [mesh.names[i] for i in sorted(mesh.offline)]
    listed = re.findall(r"^\s*(gw-\d{4})\s", r.out, re.M)
    assert listed == offline
    assert f"nodes 1-{len(offline)} of {len(offline)}" in r.out
    assert (
        "AGENT" in r.out
    )  # the version each agent reports: none here (reports sent without an agent's User-Agent)
    r = wgmesh("status", "--nodes", "--tag", "cloud:gcp", "--limit", "5", "--offset", "5", "--json")
    assert r.code == 0, r.err
    page = json.loads(r.out)
    gcp = [mesh.names[i] for i in range(N) if i % 3 == 1]
    assert page["total"] == len(gcp) and [n["name"] for n in page["nodes"]] == gcp[5:10]
    assert [n["agent_version"] for n in page["nodes"]] == [None] * 5
    r = wgmesh("status", "--nodes", "--limit", "3")
    assert "nodes 1-3 of 120; the next page: --offset 3" in r.out


def test_status_links_of_one_node(wgmesh: Cli, mesh: large_mesh.LargeMesh) -> None:
    r = wgmesh("status", "--links", "gw-0007", "--state", "relay", "--json")
    assert r.code == 0, r.err
    page = json.loads(r.out)
    want = [
        mesh.names[j]
        for j in range(N)
        if j != 7 and large_mesh.expected_state(mesh, min(7, j), max(7, j), N) == "relay"
    ]
    assert [lk["b"] for lk in page["links"]] == want and page["total"] == len(want) > 0
    r = wgmesh("status", "--links", "gw-0007")
    assert r.code == 0, r.err
    assert "Links of gw-0007" in r.out and f"links 1-100 of {N - 1}; the next page: --offset 100" in r.out


def test_status_problems_lists_each_problems_nodes(wgmesh: Cli, mesh: large_mesh.LargeMesh) -> None:
    r = wgmesh("status", "--problems", "--json")
    assert r.code == 0, r.err
    pages = json.loads(r.out)
    assert set(pages) == {"offline", "links_down", "relayed", "conflicts"}
    assert [n["name"] for n in pages["offline"]["nodes"]] == [mesh.names[i] for i in sorted(mesh.offline)]
    conflicts = [
        mesh.names[i] for i in range(2, N) if i % large_mesh.CONFLICT_EVERY == large_mesh.CONFLICT_EVERY - 1
    ]
    assert [n["name"] for n in pages["conflicts"]["nodes"]] == conflicts
    text = wgmesh("status", "--problems").out
    assert "Route conflicts (1 nodes)" in text and conflicts[0] in text


def test_status_all_and_json_keep_the_full_listing(wgmesh: Cli, mesh: large_mesh.LargeMesh) -> None:
    r = wgmesh("status", "--json")
    assert r.code == 0, r.err
    full = json.loads(r.out)
    assert set(full) >= {"nodes", "routes", "warnings", "ha_groups"} and len(full["nodes"]) == N
    r = wgmesh("status", "--all")
    assert r.code == 0, r.err
    assert "Routes" in r.out and "gw-0119" in r.out


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--tag", "cloud:aws"),
        ("status", "--links", "gw-0001", "--problem", "offline"),
        ("status", "--state", "down"),
        ("status", "--offset", "5"),
        ("status", "--nodes", "--limit", "0"),
        ("status", "--nodes", "--links", "gw-0001"),
    ],
)
def test_status_refuses_flags_that_do_not_go_together(
    wgmesh: Cli, mesh: large_mesh.LargeMesh, args: tuple[str, ...]
) -> None:
    r = wgmesh(*args)
    assert r.code == 2, (r.out, r.err)
    assert len(r.err.strip().splitlines()) == 1, r.err
