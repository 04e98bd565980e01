"""The direct TCP rung: when an agent dials a peer's listener (agent/carrier.py), how a peer on the shim is
carried, and which peers the coordinator gives a listener to (wgmesh.netmap)."""

from __future__ import annotations

import pytest
from test_netmap import node, peer, snapshot

from wgmesh.agent.carrier import Offer, carried, keeps_new_link, reported_path, wants_tcp
from wgmesh.agent.paths import PathInputs, PeerPath, ProbeResult, decide
from wgmesh.models import DirectTcp
from wgmesh.netmap import build_netmap
from wgmesh.topology import pair_key

PIN = "sha256:" + "ab" * 32
LISTENING = Offer(listener=True, endpoints=True)


def relayed_after_failure() -> PeerPath:
    """A peer `decide` moved to the shim because its direct probes failed."""
    state = decide(None, PathInputs(now=0.0))
    for i in range(1, 4):
        state = decide(state, PathInputs(now=float(i), probes=(ProbeResult(ok=False),)))
    assert state.path == "relay" and state.code == "probes_failed"
    return state


def test_a_peer_whose_udp_failed_is_dialed_when_it_listens() -> None:
    state = relayed_after_failure()
    assert wants_tcp(state, LISTENING)
    assert not wants_tcp(state, Offer(listener=False, endpoints=True))
    assert not wants_tcp(state, Offer(listener=True, endpoints=False))


@pytest.mark.parametrize(
    "inputs",
    [PathInputs(now=0.0, policy="off"), PathInputs(now=0.0, has_endpoints=False)],
    ids=["p2p off", "no endpoints"],
)
def test_a_peer_forced_onto_the_relay_is_never_dialed(inputs: PathInputs) -> None:
    state = decide(None, inputs)
    assert state.path == "relay"
    assert not wants_tcp(state, LISTENING)


def test_a_direct_peer_or_one_not_decided_is_not_dialed() -> None:
    assert not wants_tcp(None, LISTENING)
    assert not wants_tcp(decide(None, PathInputs(now=0.0)), LISTENING)


def test_a_peer_on_the_shim_is_tcp_direct_while_its_link_is_up() -> None:
    assert carried(link_up=True, tried=True, error=None).path == "tcp-direct"
    assert carried(link_up=True, tried=False, error=None).path == "tcp-direct"  # the peer dialed us
    down = carried(link_up=False, tried=True, error="connect 198.18.0.2:51820: timed out")
    assert down.path == "relay"
    assert down.note == "direct TCP: connect 198.18.0.2:51820: timed out"
    assert carried(link_up=False, tried=True, error=None).note == "direct TCP: connecting"
    assert carried(link_up=False, tried=False, error=None) == carried(link_up=False, tried=False, error="x")


def test_the_coordinator_gives_a_listener_to_pairs_whose_p2p_is_not_off() -> None:
    a = node(1, "gw-a", "100.96.0.1", endpoints=["198.18.0.1:51820"])
    b = node(2, "gw-b", "100.96.0.2", endpoints=["198.18.0.2:51820"], tcp=DirectTcp(port=51820, pin=PIN))
    c = node(3, "gw-c", "100.96.0.3", endpoints=["198.18.0.3:51820"])
    snap = snapshot(nodes=[a, b, c], pair_p2p={pair_key(c.id, b.id): "off"}, routes=[])
    assert peer(build_netmap(snap, a.id), "gw-b").tcp == DirectTcp(port=51820, pin=PIN)
    assert peer(build_netmap(snap, c.id), "gw-b").tcp is None  # the pair's P2P is off
    assert peer(build_netmap(snap, b.id), "gw-a").tcp is None  # gw-a runs no listener
    assert build_netmap(snap, a.id).tcp_direct


def test_a_listener_without_endpoints_is_not_given() -> None:
    a = node(1, "gw-a", "100.96.0.1", endpoints=["198.18.0.1:51820"])
    b = node(2, "gw-b", "100.96.0.2", tcp=DirectTcp(port=51820, pin=PIN))  # no address to reach it at
    snap = snapshot(nodes=[a, b], routes=[])
    assert peer(build_netmap(snap, a.id), "gw-b").tcp is None


def test_of_two_links_between_a_pair_both_ends_keep_the_lower_dialers() -> None:
    # Whichever link authenticates first at an end, both ends end with the one node 3 dialed.
    for first, second in ((3, 7), (7, 3)):
        kept = second if keeps_new_link(first, second) else first
        assert kept == 3
    assert keeps_new_link(5, 5)  # a redial by the same node replaces its old link


def test_a_coordinator_that_knows_no_tcp_direct_is_told_relay() -> None:
    assert reported_path("tcp-direct", coordinator_takes_tcp=False) == "relay"
    assert reported_path("tcp-direct", coordinator_takes_tcp=True) == "tcp-direct"
    for path in ("direct", "relay"):
        assert reported_path(path, coordinator_takes_tcp=False) == path  # type: ignore[arg-type]
