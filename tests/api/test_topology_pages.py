"""GET /api/v1/topology/summary, /nodes and /links on a generated registry of 120 gateways (tests/large_mesh):
counts and pages agree with the link states the reports give (worked out by hand in large_mesh), filters
and paging hold, bad queries are 4xx JSON, and any admin token reads them, a read-only one too."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import large_mesh
import pytest
from coordinator_harness import Api, assert_error

N = 120
PEERS = 30


@pytest.fixture(scope="module")
def mesh(coordinator: Api) -> large_mesh.LargeMesh:
    return large_mesh.fill_database(coordinator.db_url, N, peers_per_node=PEERS)


def states(mesh: large_mesh.LargeMesh) -> dict[tuple[int, int], str]:
    return {(i, j): large_mesh.expected_state(mesh, i, j, N) for i in range(N) for j in range(i + 1, N)}


def get(admin: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    r = admin.get(path, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_summary_counts_every_link_node_route_and_group(
    admin: httpx.Client, mesh: large_mesh.LargeMesh
) -> None:
    s = get(admin, "/api/v1/topology/summary")
    want = Counter(states(mesh).values())
    assert s["links"] == {
        k.replace("-", "_"): want[k] for k in ("direct", "tcp-direct", "relay", "down", "unknown")
    }
    assert all(s["links"][k] > 0 for k in ("direct", "relay", "down", "unknown"))
    assert s["view"] == "summary"
    assert s["nodes"] == {"total": N, "online": N - len(mesh.offline), "offline": len(mesh.offline)}
    conflicts = len(
        [i for i in range(2, N) if i % large_mesh.CONFLICT_EVERY == large_mesh.CONFLICT_EVERY - 1]
    )
    assert s["routes"]["conflict"] == conflicts and s["routes"]["active"] == N
    problems = {p["problem"]: p for p in s["problems"]}
    assert problems["links_down"]["count"] == want["down"]
    assert problems["relayed"]["count"] == want["relay"]
    assert problems["offline"] == {
        "problem": "offline",
        "count": len(mesh.offline),
        "nodes": len(mesh.offline),
        "query": "problem=offline",
    }
    groups = {g["value"]: g for g in s["tags"]}
    assert groups["cloud:aws"]["nodes"]["total"] == len([i for i in range(N) if i % 3 == 0])
    assert groups["cloud:aws"]["key"] == "cloud"
    assert groups["region:eu-west-1"]["query"] == "tag=region%3Aeu-west-1"
    assert len(s["sites"]) == N // 2 and {g["nodes"]["total"] for g in s["sites"]} == {2}


def test_nodes_page_by_tag_and_problem_with_each_nodes_links(
    admin: httpx.Client, mesh: large_mesh.LargeMesh
) -> None:
    links = states(mesh)
    page = get(admin, "/api/v1/topology/nodes", tag="region:us-east-1", problem="links_down", limit=500)
    want = []
    for i in range(N):
        mine = Counter(s for (a, b), s in links.items() if i in (a, b))
        if mesh.tags(i)[1] == "region:us-east-1" and mine["down"]:
            want.append(
                (
                    mesh.names[i],
                    {
                        k.replace("-", "_"): mine[k]
                        for k in ("direct", "tcp-direct", "relay", "down", "unknown")
                    },
                )
            )
    assert page["total"] == len(want) > 0
    assert [(r["name"], r["links"]) for r in page["nodes"]] == want
    assert all("links_down" in r["problems"] for r in page["nodes"])
    first = get(admin, "/api/v1/topology/nodes", offset=0, limit=7)
    second = get(admin, "/api/v1/topology/nodes", offset=7, limit=7)
    assert first["total"] == second["total"] == N
    assert [r["name"] for r in first["nodes"] + second["nodes"]] == mesh.names[:14]
    offline = get(admin, "/api/v1/topology/nodes", problem="offline")
    assert [r["name"] for r in offline["nodes"]] == [mesh.names[i] for i in sorted(mesh.offline)]
    assert get(admin, "/api/v1/topology/nodes", site="vpc-0003")["total"] == 2


def test_links_page_of_one_node(admin: httpx.Client, mesh: large_mesh.LargeMesh) -> None:
    links = states(mesh)
    i = 5
    page = get(admin, f"/api/v1/topology/nodes/{mesh.names[i]}/links", limit=500)
    assert page["node"] == mesh.names[i] and page["total"] == N - 1
    got = {lk["b"]: lk["path"] for lk in page["links"]}
    assert got == {mesh.names[j]: links[(min(i, j), max(i, j))] for j in range(N) if j != i}
    assert all(lk["a"] == mesh.names[i] for lk in page["links"])
    down = get(admin, f"/api/v1/topology/nodes/{mesh.names[i]}/links", state="down")
    assert down["total"] == list(got.values()).count("down") > 0
    assert {lk["path"] for lk in down["links"]} == {"down"}
    paged = get(admin, f"/api/v1/topology/nodes/{mesh.names[i]}/links", offset=100, limit=50)
    assert len(paged["links"]) == N - 1 - 100


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/topology/nodes", {"limit": "0"}),
        ("/api/v1/topology/nodes", {"limit": "501"}),
        ("/api/v1/topology/nodes", {"offset": "-1"}),
        ("/api/v1/topology/nodes", {"limit": "ten"}),
        ("/api/v1/topology/nodes", {"problem": "gremlins"}),
        ("/api/v1/topology/nodes/gw-0001/links", {"state": "sideways"}),
        ("/api/v1/topology/nodes/gw-0001/links", {"limit": "100000"}),
    ],
)
def test_bad_queries_are_refused_with_a_reason(
    admin: httpx.Client, mesh: large_mesh.LargeMesh, path: str, params: dict[str, str]
) -> None:
    error = assert_error(admin.get(path, params=params), 422, "invalid_query")
    assert any(name in error["message"] for name in params)


def test_one_node_with_its_peers_is_that_node_of_the_whole_topology(
    admin: httpx.Client, mesh: large_mesh.LargeMesh
) -> None:
    whole = {n["name"]: n for n in get(admin, "/api/v1/topology")["nodes"]}
    offline = min(mesh.offline)  # it sends no report: its peers are seen through theirs
    for ref, name in ((mesh.names[5], mesh.names[5]), (mesh.names[offline], mesh.names[offline]),
                      (str(whole[mesh.names[7]]["id"]), mesh.names[7])):  # fmt: skip
        one = get(admin, f"/api/v1/topology/nodes/{ref}")
        assert one == whole[name], name
    seen = [p for p in whole[mesh.names[offline]]["peers"] if p["path"] is not None]
    assert seen, "the offline node's peers reported on it"


def test_an_unknown_node_is_not_found(admin: httpx.Client, mesh: large_mesh.LargeMesh) -> None:
    assert_error(admin.get("/api/v1/topology/nodes/nobody/links"), 404, "unknown_node")
    assert_error(admin.get("/api/v1/topology/nodes/nobody"), 404, "unknown_node")
    assert_error(admin.get("/api/v1/topology/nodes/999999"), 404, "unknown_node")


def test_any_admin_token_reads_them_nobody_else(
    coordinator: Api, admin: httpx.Client, mesh: large_mesh.LargeMesh
) -> None:
    r = admin.post("/api/v1/admin-tokens", json={"name": "pages-reader", "read_only": True})
    assert r.status_code == 201, r.text
    paths = (
        "/api/v1/topology/summary",
        "/api/v1/topology/nodes",
        "/api/v1/topology/nodes/gw-0000",
        "/api/v1/topology/nodes/gw-0000/links",
    )
    with coordinator.admin(r.json()["token"]) as reader, coordinator.anonymous() as anon:
        for path in paths:
            assert reader.get(path).status_code == 200, path
            assert_error(anon.get(path), 401)
