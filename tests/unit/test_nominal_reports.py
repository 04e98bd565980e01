"""Reports of more than 50 peers leave the nominal ones out (agent/reporting.condense, models.NominalPeers):
whatever the coordinator shows from them (link counts, a node's links, the full topology, HA health) is
what it shows from the same reports whole."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

import pytest
from topologies import NOW, node, topology
from topologies import digests_of as digests

from wgmesh.agent import reporting
from wgmesh.models import Network, Node, NodeStatus, NominalPeers, PeerStatus, StatusReport
from wgmesh.topology import HANDSHAKE_FRESH, ha_member_health, report_entries
from wgmesh.topology_summary import link_states_of, node_links, tally_links
from wgmesh.values import NodeId

FRESH = NOW - timedelta(seconds=20)
STALE = NOW - HANDSHAKE_FRESH - timedelta(seconds=1)


def nominal(peer: Node, at: datetime = FRESH) -> PeerStatus:
    return PeerStatus(
        public_key=peer.public_key, path="direct", health="up", last_handshake=at, rx_bytes=10, tx_bytes=20
    )


def odd(rng: random.Random, peer: Node) -> PeerStatus:
    """An entry with something to say: relayed, stale, unanswered, or not yet handshaken."""
    return rng.choice(
        [
            PeerStatus(
                public_key=peer.public_key, path="relay", relay="r1", health="up", last_handshake=FRESH
            ),
            PeerStatus(public_key=peer.public_key, path="direct", health="up", last_handshake=STALE),
            PeerStatus(public_key=peer.public_key, path="direct", health="down", last_handshake=FRESH),
            PeerStatus(public_key=peer.public_key, path=None, last_handshake=None),
        ]
    )


def mesh(seed: int, n: int = 70) -> tuple[list[Node], list[NodeStatus], list[NodeStatus]]:
    """`n` nodes (ids with gaps: deleted nodes) each reporting most peers, most of them nominal; the
    reports whole and condensed as the agent sends them."""
    rng = random.Random(seed)
    ids = sorted(rng.sample(range(1, 3 * n), n))
    nodes = [node(i, f"n{i:03d}", online=True) for i in ids]
    whole, condensed = [], []
    for a in nodes:
        if rng.random() < 0.15:
            continue  # never reported
        peers = []
        for b in nodes:
            if b is a or rng.random() < 0.05:
                continue  # not in WireGuard yet
            peers.append(
                nominal(b, NOW - timedelta(seconds=rng.uniform(0, 170)))
                if rng.random() < 0.8
                else odd(rng, b)
            )
        full = StatusReport(peers=peers)
        netmap = {b.public_key: NodeId(b.id) for b in nodes if b is not a}
        short = reporting.condense(full, netmap, NOW)
        if len(peers) > reporting.WHOLE_UP_TO:
            assert short.nominal is not None and len(short.peers) < len(peers) / 2
        else:
            assert short is full
        whole.append(NodeStatus(node=a.name, reported_at=NOW, report=full))
        condensed.append(NodeStatus(node=a.name, reported_at=NOW, report=short))
    return nodes, whole, condensed


@pytest.mark.parametrize("seed", range(6))
def test_link_counts_and_a_nodes_links_are_the_same_from_condensed_reports(seed: int) -> None:
    nodes, whole, condensed = mesh(seed)
    ids = [n.id for n in nodes]
    online = set(ids)
    full_d, short_d = digests(nodes, whole), digests(nodes, condensed)
    want, got = tally_links(ids, full_d, NOW, online), tally_links(ids, short_d, NOW, online)
    assert got.counts() == want.counts()
    assert {i: got.of(i) for i in ids} == {i: want.of(i) for i in ids}
    for n in nodes[:10]:
        states = link_states_of(n, nodes, short_d, NOW)
        assert states == link_states_of(n, nodes, full_d, NOW)
        others = [o for o, _ in states]
        paths = [lk.path for lk in node_links(Network(), n, others, overrides={}, digests=short_d, now=NOW)]
        assert paths == [s for _, s in states]


@pytest.mark.parametrize("seed", range(3))
def test_the_full_topology_is_the_same_from_condensed_reports(seed: int) -> None:
    nodes, whole, condensed = mesh(seed, n=56)
    want = {(lk.a, lk.b): lk.path for lk in topology(nodes, statuses=whole).links}
    got = {(lk.a, lk.b): lk.path for lk in topology(nodes, statuses=condensed).links}
    assert got == want
    assert Counter(got.values())["direct"] > len(got) / 2


def test_ha_health_counts_a_peer_left_out_as_nominal_as_up() -> None:
    nodes, whole, condensed = mesh(7, n=60)
    for member in nodes[:5]:
        by_id = {n.id: n for n in nodes}
        ids = {n.name: n.id for n in nodes}
        want = ha_member_health(member, {ids[s.node]: s for s in whole})
        got = ha_member_health(member, {ids[s.node]: s for s in condensed})
        assert got == want
        assert by_id[member.id] is member


def test_a_condensed_report_is_small_and_keeps_what_is_not_nominal() -> None:
    nodes = [node(i, f"n{i:04d}", overlay_ip=f"100.96.{i // 250}.{i % 250 + 1}") for i in range(1, 1001)]
    me, peers = nodes[0], nodes[1:]
    entries = [nominal(p) for p in peers]
    entries[500] = PeerStatus(
        public_key=peers[500].public_key, path="relay", relay="r1", last_handshake=FRESH
    )
    full = StatusReport(peers=entries)
    short = reporting.condense(full, {p.public_key: NodeId(p.id) for p in peers}, NOW)
    assert [p.public_key for p in short.peers] == [peers[500].public_key]
    assert short.nominal == NominalPeers(
        ranges=[(2, 501), (503, 1000)], count=998, oldest_handshake=FRESH, rx_bytes=9980, tx_bytes=19960
    )
    assert len(short.model_dump_json()) < len(full.model_dump_json()) / 200
    # What the coordinator makes of it: every peer there, the relayed one as it was said.
    entries_back = report_entries(NodeId(me.id), short, nodes)
    assert len(entries_back) == 999 and entries_back[peers[500].public_key].path == "relay"
    assert reporting.peer_count(short) == reporting.peer_count(full) == 999


def test_up_to_fifty_peers_the_report_goes_whole() -> None:
    nodes = [node(i, f"n{i}") for i in range(1, 52)]
    full = StatusReport(peers=[nominal(p) for p in nodes[1:]])
    assert reporting.condense(full, {p.public_key: NodeId(p.id) for p in nodes[1:]}, NOW) is full


def test_a_peer_turning_stale_is_a_change_that_sends_the_report_whole() -> None:
    nodes = [node(i, f"n{i}") for i in range(1, 80)]
    netmap = {p.public_key: NodeId(p.id) for p in nodes[1:]}
    before = reporting.condense(StatusReport(peers=[nominal(p) for p in nodes[1:]]), netmap, NOW)
    later = NOW + timedelta(seconds=5)
    entries = [nominal(p) for p in nodes[1:]]
    entries[3] = nominal(nodes[4], at=STALE)
    after = reporting.condense(StatusReport(peers=entries), netmap, later)
    sent = reporting.Sent(reporting.state(before, NOW), 0.0)
    assert reporting.next_kind(sent, after, later, 1.0) == "full"
    counters_only = reporting.condense(
        StatusReport(peers=[p.model_copy(update={"rx_bytes": 99}) for p in (nominal(q) for q in nodes[1:])]),
        netmap,
        later,
    )
    assert reporting.next_kind(sent, counters_only, later, 1.0) == "heartbeat"


def test_the_ranges_are_checked() -> None:
    with pytest.raises(ValueError):
        NominalPeers(ranges=[(5, 3)])
    with pytest.raises(ValueError):
        NominalPeers(ranges=[(1, 4), (4, 6)])
    covered = NominalPeers(ranges=[(2, 4), (9, 9)], count=4)
    assert [i for i in range(12) if covered.covers(i)] == [2, 3, 4, 9]


def test_a_range_wider_than_the_registry_costs_no_more_than_the_registry() -> None:
    """Ranges are an agent's word: one reaching the largest id must not make a bit set of 2³¹ bits."""
    a, b, c = node(1, "a"), node(2, "b"), node(3, "c")
    report = StatusReport(
        nominal=NominalPeers(ranges=[(1, 2**31 - 1)], count=2, oldest_handshake=FRESH, rx_bytes=1, tx_bytes=1)
    )
    status = NodeStatus(node="a", reported_at=NOW, report=report)
    tally = tally_links([a.id, b.id, c.id], digests([a, b, c], [status]), NOW, {a.id, b.id, c.id})
    assert tally.of(a.id).direct == 2 and tally.counts().unknown == 1
    with pytest.raises(ValueError):
        NominalPeers(ranges=[(1, 2**31)])


@pytest.mark.parametrize("seed", range(4))
def test_with_reporters_offline_a_condensed_report_never_says_more_than_the_whole_one(seed: int) -> None:
    """An offline reporter's handshakes are judged now, and its nominal peers all by the oldest of them:
    its links may turn down sooner than with the report whole, never direct where that one is not."""
    nodes, whole, condensed = mesh(seed)
    rng = random.Random(seed)
    nodes = [n.model_copy(update={"online": rng.random() < 0.5}) for n in nodes]
    later = NOW + timedelta(seconds=60)
    full_d, short_d = digests(nodes, whole), digests(nodes, condensed)
    sooner = 0
    for n in nodes:
        want = {o.name: st for o, st in link_states_of(n, nodes, full_d, later)}
        got = {o.name: st for o, st in link_states_of(n, nodes, short_d, later)}
        for other, state in got.items():
            assert state == want[other] or (state, want[other]) == ("down", "direct"), (n.name, other)
            sooner += state != want[other]
    online = {n.id for n in nodes if n.online}
    ids = [n.id for n in nodes]
    assert (
        tally_links(ids, short_d, later, online).counts().unknown
        == tally_links(ids, full_d, later, online).counts().unknown
    )
    assert sooner > 0, "no offline reporter had a nominal peer older than the cutoff: the case is not tested"


def test_peers_not_probed_are_listed_and_a_report_with_none_nominal_goes_whole() -> None:
    nodes = [node(i, f"n{i}") for i in range(1, 60)]
    netmap = {p.public_key: NodeId(p.id) for p in nodes[1:]}
    unprobed = StatusReport(peers=[nominal(p).model_copy(update={"health": None}) for p in nodes[1:]])
    assert reporting.condense(unprobed, netmap, NOW) is unprobed
    mixed = StatusReport(
        peers=[nominal(p).model_copy(update={"health": None}) if p.id % 2 else nominal(p) for p in nodes[1:]]
    )
    short = reporting.condense(mixed, netmap, NOW)
    assert short.nominal is not None and {p.health for p in short.peers} == {None}
