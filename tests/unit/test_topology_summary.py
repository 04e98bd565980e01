"""wgmesh.topology_summary: link counts from the reports in one pass agree with the full topology's links,
a node's links page is its links of the full topology, groups and problems count the right nodes."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest
from topologies import NOW, digests_of, node, report, route, topology

from wgmesh.models import LinkState, Network, Node, NodeStatus, PeerStatus
from wgmesh.topology import HANDSHAKE_FRESH
from wgmesh.topology_summary import (
    FULL_VIEW_MAX,
    LinkTally,
    filter_rows,
    link_states_of,
    node_links,
    node_rows,
    summarize,
    tally_links,
)
from wgmesh.values import NodeId, P2PPolicy

FRESH = NOW - timedelta(seconds=20)
STALE = NOW - HANDSHAKE_FRESH - timedelta(seconds=1)
AGED = NOW - timedelta(seconds=200)
LinkStates: tuple[LinkState, ...] = ("direct", "tcp-direct", "relay", "down", "unknown")


def counted(counts: Counter[str]) -> dict[str, int]:
    """Link states counted as LinkCounts names them (`tcp-direct` is `tcp_direct`)."""
    return {s.replace("-", "_"): counts[s] for s in LinkStates}


def random_mesh(seed: int, n: int) -> tuple[list[Node], list[NodeStatus]]:
    """`n` nodes; each reports a random subset of peers with random paths, handshakes (none, fresh,
    stale) and RTTs; some never report."""
    rng = random.Random(seed)
    nodes = [
        node(
            i,
            f"n{i:02d}",
            tags=[f"region:r{i % 3}"] + (["edge"] if i % 4 == 0 else []),
            site=f"s{i // 2}",
            online=rng.random() < 0.7,
        )
        for i in range(1, n + 1)
    ]
    statuses = []
    for a in nodes:
        if rng.random() < 0.2:
            continue
        peers = [
            PeerStatus(
                public_key=b.public_key,
                path=rng.choice([None, "direct", "relay", "tcp-direct"]),
                # AGED: stale now, fresh when a report made 150 s ago was (judged then while online).
                last_handshake=rng.choice([None, FRESH, STALE, AGED]),
                rtt_ms=rng.choice([None, rng.uniform(1, 90)]),
                rx_bytes=rng.randrange(10**6),
                tx_bytes=rng.randrange(10**6),
            )
            for b in nodes
            if b is not a and rng.random() < 0.6
        ]
        made = report(a, peers)
        statuses.append(
            made.model_copy(update={"reported_at": rng.choice([NOW, NOW - timedelta(seconds=150)])})
        )
    return nodes, statuses


def online(nodes: list[Node]) -> set[NodeId]:
    return {n.id for n in nodes if n.online}


@pytest.mark.parametrize("seed", range(8))
def test_link_counts_are_the_full_topologys(seed: int) -> None:
    nodes, statuses = random_mesh(seed, 14)
    full = topology(nodes, statuses=statuses)
    digests = digests_of(nodes, statuses)
    tally = tally_links([n.id for n in nodes], digests, NOW, online(nodes))
    assert tally.counts().model_dump() == counted(Counter(lk.path for lk in full.links))
    for n in nodes:
        mine = Counter(lk.path for lk in full.links if n.name in (lk.a, lk.b))
        assert tally.of(n.id).model_dump() == counted(mine), n.name


@pytest.mark.parametrize("seed", range(4))
def test_a_nodes_links_are_its_links_of_the_full_topology(seed: int) -> None:
    nodes, statuses = random_mesh(seed, 10)
    pairs: dict[tuple[int, int], P2PPolicy] = {(nodes[0].id, nodes[3].id): "off"}
    full = topology(nodes, statuses=statuses, pairs=pairs)
    digests = digests_of(nodes, statuses)
    for n in nodes:
        states = link_states_of(n, nodes, digests, NOW)
        others = [o for o, _ in states]
        got = node_links(Network(), n, others, overrides=pairs, digests=digests, now=NOW)
        assert [lk.path for lk in got] == [st for _, st in states]
        want = []
        for lk in full.links:
            if n.name in (lk.a, lk.b):
                other = lk.b if lk.a == n.name else lk.a
                want.append((other, lk.path, lk.p2p, lk.rtt_ms, lk.last_handshake, lk.rx_bytes, lk.tx_bytes))
        assert [
            (lk.b, lk.path, lk.p2p, lk.rtt_ms, lk.last_handshake, lk.rx_bytes, lk.tx_bytes) for lk in got
        ] == sorted(want)
        assert all(lk.a == n.name for lk in got)


def test_a_report_of_a_deleted_node_or_of_itself_counts_nothing() -> None:
    a, b = node(1, "a"), node(2, "b")
    gone = node(3, "gone")
    st = report(a, [PeerStatus(public_key=gone.public_key, path="direct", last_handshake=FRESH)])
    digests = digests_of([a, b, gone], [st])
    tally = tally_links([a.id, b.id], digests, NOW)
    assert tally.counts().model_dump() == {"direct": 0, "tcp_direct": 0, "relay": 0, "down": 0, "unknown": 1}


def test_groups_problems_and_filters() -> None:
    a = node(1, "a", tags=["cloud:aws", "region:eu"], site="vpc1", subnets=["10.1.0.0/24"], online=True)
    b = node(2, "b", tags=["cloud:aws"], site="vpc1", subnets=["10.1.0.0/16"], online=True)
    c = node(3, "c", tags=["edge"], site="c", online=False)
    d = node(4, "d", site="d", static=True)
    nodes = [a, b, c, d]
    routes = [route("10.1.0.0/24", a), route("10.1.0.0/16", b, "conflict", "overlaps", "10.1.0.0/24@a")]
    statuses = [
        report(a, [PeerStatus(public_key=b.public_key, path="relay", last_handshake=FRESH)]),
        report(b, [PeerStatus(public_key=c.public_key, path="direct", last_handshake=STALE)]),
    ]
    digests = digests_of(nodes, statuses)
    tally = tally_links([n.id for n in nodes], digests, NOW)
    rows = node_rows(nodes, tally, routes)
    assert {r.name: r.problems for r in rows} == {
        "a": ["relayed"],
        "b": ["links_down", "relayed", "conflicts"],
        "c": ["offline", "links_down"],
        "d": [],  # a static peer never reports: not offline
    }
    s = summarize(
        Network(), version=3, rows=rows, nodes=nodes, routes=routes, ha_groups=0, digests=digests, tally=tally
    )
    assert s.view == "full"
    assert s.nodes.model_dump() == {"total": 4, "online": 2, "offline": 2}
    assert s.links.model_dump() == {"direct": 0, "tcp_direct": 0, "relay": 1, "down": 1, "unknown": 4}
    assert s.routes["conflict"] == 1 and s.routes["active"] == 1
    assert s.warnings["link_down"] == 1 and s.warnings["route_conflict"] == 1
    assert {p.problem: (p.count, p.nodes) for p in s.problems} == {
        "offline": (1, 1),
        "links_down": (1, 2),
        "relayed": (1, 2),
        "conflicts": (1, 1),
    }
    tags = {(g.key, g.value): (g.nodes.total, g.problems["relayed"], g.query) for g in s.tags}
    assert tags == {
        ("cloud", "cloud:aws"): (2, 2, "tag=cloud%3Aaws"),
        ("region", "region:eu"): (1, 1, "tag=region%3Aeu"),
        ("tag", "edge"): (1, 0, "tag=edge"),
    }
    assert [(g.value, g.nodes.total) for g in s.sites] == [("vpc1", 2)]  # sites of one node are left out
    assert [r.name for r in filter_rows(rows, tag="cloud:aws", problem="conflicts")] == ["b"]
    assert [r.name for r in filter_rows(rows, site="vpc1", name="a")] == ["a"]


def test_outdated_agents_are_counted_as_the_topology_warns_of_them_and_rows_carry_versions() -> None:
    a, b, c, d = (node(i, n, online=True) for i, n in enumerate("abcd", start=1))
    nodes = [a, b, c, d]
    statuses = [
        report(a, [], agent_version="0.2.0"),
        report(b, [], agent_version="0.0.9"),
        report(c, []),  # no version: an agent of 0.1.0
    ]
    digests = digests_of(nodes, statuses)
    tally = tally_links([n.id for n in nodes], digests, NOW)
    rows = node_rows(nodes, tally, [], digests)
    assert {r.name: r.agent_version for r in rows} == {"a": "0.2.0", "b": "0.0.9", "c": None, "d": None}
    s = summarize(
        Network(), version=1, rows=rows, nodes=nodes, routes=[], ha_groups=0, digests=digests, tally=tally
    )
    full = topology(nodes, statuses=statuses)
    assert s.warnings["agent_outdated"] == 1 == sum("runs agent" in w for w in full.warnings)


def test_the_view_is_a_summary_above_the_full_view_limit() -> None:
    nodes = [node(i, f"n{i}") for i in range(1, FULL_VIEW_MAX + 2)]
    tally = LinkTally(nodes=len(nodes), total=dict.fromkeys(LinkStates, 0))
    rows = node_rows(nodes, tally, [])
    s = summarize(
        Network(), version=1, rows=rows, nodes=nodes, routes=[], ha_groups=0, digests={}, tally=tally
    )
    assert s.view == "summary"
    s = summarize(
        Network(),
        version=1,
        rows=rows[:-1],
        nodes=nodes[:-1],
        routes=[],
        ha_groups=0,
        digests={},
        tally=tally,
    )
    assert s.view == "full"
