"""The path controller's pure parts: probe addresses, burst verdicts, and endpoints per decision."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from netmaps import netmap

from wgmesh import keys
from wgmesh.agent.path_control import PathController, _degraded, _Observed, _with_burst, probe_address
from wgmesh.agent.paths import DEFAULT_CONFIG, PathInputs
from wgmesh.agent.prober import BurstResult
from wgmesh.agent.wgstate import PeerStats
from wgmesh.models import PeerConfig
from wgmesh.values import Endpoint

ep = Endpoint.parse


def peer(node_id: int, *, p2p: str = "auto", endpoints: list[str] | None = None) -> PeerConfig:
    return PeerConfig(
        node_id=node_id,
        name=f"gw{node_id}",
        public_key=keys.generate_keypair().public_key,
        overlay_ip=f"100.96.0.{node_id}",
        allowed_ips=[f"100.96.0.{node_id}/32"],
        endpoints=[f"198.18.0.{10 + node_id}:51820"] if endpoints is None else endpoints,
        p2p=p2p,  # type: ignore[arg-type]
    )


@pytest.fixture
def controller() -> Iterator[PathController]:
    made = PathController(51820)
    yield made
    made.shim._retain(set())
    made.net.loop.close()


def test_probe_address_is_the_wireguard_port_plus_one() -> None:
    assert probe_address(ep("198.18.0.12:51820")) == ("198.18.0.12", 51821)
    assert probe_address(ep("[2001:db8::1]:51820")) == ("2001:db8::1", 51821)


@pytest.mark.parametrize(
    ("direct", "relay", "degraded"),
    [
        (BurstResult(400, 400, 38e6), BurstResult(400, 400, 38e6), False),
        (BurstResult(400, 100, 9.4e6), BurstResult(400, 400, 38e6), True),  # throttled against the relay
        (BurstResult(400, 300, 30e6), None, True),  # 25 % lost, no relay to compare with
        (BurstResult(400, 390, 37e6), None, False),
    ],
)
def test_a_burst_is_degraded_when_slow_against_the_relay_or_lossy(
    direct: BurstResult, relay: BurstResult | None, degraded: bool
) -> None:
    assert _degraded(direct, relay, DEFAULT_CONFIG) is degraded


def test_burst_figures_reach_the_decision_inputs() -> None:
    seen = _Observed(direct_burst=BurstResult(400, 100, 9e6), relay_burst=BurstResult(400, 400, 38e6))
    inputs = _with_burst(PathInputs(now=1.0), seen)
    assert (inputs.direct_goodput, inputs.relay_goodput, inputs.direct_loss) == (9e6, 38e6, 0.75)


def test_endpoints_before_any_decision(controller: PathController) -> None:
    off, bare, auto = peer(2, p2p="off"), peer(3, endpoints=[]), peer(4)
    assert str(controller.endpoint_for(off)).startswith("127.0.0.1:")
    assert str(controller.endpoint_for(bare)).startswith("127.0.0.1:")
    assert controller.endpoint_for(auto) is None  # the planner's default: the first candidate
    # One stable shim socket per peer.
    assert controller.endpoint_for(off) == controller.endpoint_for(off) != controller.endpoint_for(bare)


def test_tick_decides_relay_for_p2p_off_and_direct_for_auto(controller: PathController) -> None:
    off, auto = peer(2, p2p="off"), peer(3)
    stats = {auto.public_key: PeerStats(last_handshake=datetime.now(UTC), endpoint=ep("198.18.0.13:51820"))}
    changed = controller.tick(netmap(off, auto), stats)
    assert {(p.name, s.path, s.code) for p, s, prev in changed if prev is None} == {
        ("gw2", "relay", "policy_off"),
        ("gw3", "direct", "start"),
    }
    assert controller.tick(netmap(off, auto), stats) == []  # nothing new: no endpoint churn
    shim_endpoint = controller.endpoint_for(off)
    assert shim_endpoint is not None and shim_endpoint.host == "127.0.0.1"
    assert controller.view(2, shim_endpoint).path == "relay"
    assert controller.view(2, shim_endpoint).reason == "p2p is off for this pair"
    # A direct peer WireGuard roamed onto its shim socket (the other side chose the relay) shows as relayed.
    roamed = controller.shim.endpoint_for(3)
    view = controller.view(3, roamed)
    assert view.path == "relay" and "WireGuard follows" in (view.reason or "")
    assert controller.view(3, ep("198.18.0.13:51820")).path == "direct"


def test_the_best_answering_candidate_becomes_the_endpoint(controller: PathController) -> None:
    two = peer(2, endpoints=["198.18.0.12:51820", "198.18.1.12:51820"])
    controller.tick(netmap(two), {})
    controller._peers[2].best_direct = ep("198.18.1.12:51820")
    assert controller.endpoint_for(two) == ep("198.18.1.12:51820")
    # A candidate the netmap no longer lists is never used.
    controller._peers[2].best_direct = ep("198.18.9.9:51820")
    assert controller.endpoint_for(two) is None


def test_departed_peers_are_forgotten(controller: PathController) -> None:
    two, three = peer(2), peer(3)
    controller.tick(netmap(two, three), {})
    controller.follow(netmap(three), keys.generate_keypair())
    assert set(controller._peers) == {3}
    assert set(controller.prober.keys) == {3}


def test_a_stale_roam_is_undone_only_when_the_peer_says_it_is_direct(controller: PathController) -> None:
    two = peer(2)
    stats = {two.public_key: PeerStats(last_handshake=datetime.now(UTC), endpoint=ep("198.18.0.12:51820"))}
    controller.tick(netmap(two), stats)
    assert (controller.state(2) or pytest.fail("no decision")).path == "direct"
    roamed = {
        two.public_key: PeerStats(last_handshake=datetime.now(UTC), endpoint=controller.shim.endpoint_for(2))
    }
    # The peer chose the relay: WireGuard follows it, the agent leaves it.
    controller.prober.peer_relays[2] = (True, time.monotonic())
    assert controller.tick(netmap(two), roamed) == [] and controller.take_reasserts() == set()
    # The peer says direct too: the roam is a leftover of the switch back, undone once (then rate-limited).
    controller.prober.peer_relays[2] = (False, time.monotonic())
    assert [p.name for p, _, _ in controller.tick(netmap(two), roamed)] == ["gw2"]
    assert controller.take_reasserts() == {two.public_key}
    assert controller.tick(netmap(two), roamed) == []
    # Old news about the peer counts for nothing.
    controller._peers[2].last_reassert = -1e9
    controller.prober.peer_relays[2] = (False, time.monotonic() - 60)
    assert controller.tick(netmap(two), roamed) == []


def test_static_peers_are_left_to_plain_wireguard(controller: PathController) -> None:
    static = peer(5, endpoints=[]).model_copy(update={"static": True})
    assert controller.endpoint_for(static) is None  # not the shim: nothing behind it speaks the relay
    assert controller.tick(netmap(static), {}) == []
    assert controller.state(5) is None and 5 not in controller._peers


def test_a_departed_peer_leaves_nothing_behind(controller: PathController) -> None:
    two, three = peer(2), peer(3)
    stats = {two.public_key: PeerStats(last_handshake=datetime.now(UTC), endpoint=ep("198.18.0.12:51820"))}
    controller.tick(netmap(two, three), stats)
    # A stale roam undone for gw2: its time is kept per peer.
    roamed = {
        two.public_key: PeerStats(last_handshake=datetime.now(UTC), endpoint=controller.shim.endpoint_for(2))
    }
    controller.prober.peer_relays[2] = (False, time.monotonic())
    assert [p.name for p, _, _ in controller.tick(netmap(two, three), roamed)] == ["gw2"]
    record = controller._peers[2]
    assert record.last_reassert > 0
    record.in_flight = True  # a probe round for gw2 is under way
    controller.follow(netmap(three), keys.generate_keypair())
    assert set(controller._peers) == {3}
    # The round ends after gw2 left: its results go with the dropped record, nothing is recreated.
    controller.net.loop.run_until_complete(
        controller._probe_round(2, record, [], ping=False, burst=False, via_relay=False)
    )
    assert set(controller._peers) == {3} and controller.state(2) is None
    # gw2 back in the netmap starts afresh: no rate limit inherited from before it left.
    controller.tick(netmap(two, three), roamed)
    assert controller._peers[2].last_reassert < 0 and not controller._peers[2].in_flight


def test_peer_reports_carry_counters_and_the_decided_path(controller: PathController) -> None:
    off, auto = peer(2, p2p="off"), peer(3)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    stranger = keys.generate_keypair().public_key
    stats = {
        off.public_key: PeerStats(1, 2, None, None),
        auto.public_key: PeerStats(10, 20, when, ep("198.18.0.13:51820")),
        stranger: PeerStats(5, 6, None, ep("198.18.0.99:51820")),
    }
    controller.tick(netmap(off, auto), stats)
    reports = {
        status.public_key: (config, status)
        for config, status in controller.peer_reports(netmap(off, auto), stats)
    }
    assert reports[auto.public_key][0] == auto
    assert reports[auto.public_key][1].model_dump(exclude_none=True) == {
        "public_key": auto.public_key,
        "rx_bytes": 10,
        "tx_bytes": 20,
        "last_handshake": when,
        "endpoint": "198.18.0.13:51820",
        "path": "direct",
        "reason": (controller.state(3) or pytest.fail("no decision")).reason,
        "health": "unknown",  # probed, never answered yet
    }
    relayed = reports[off.public_key][1]
    assert (relayed.path, relayed.reason) == ("relay", "p2p is off for this pair")
    # A key WireGuard holds but the netmap does not: counters only, no path to claim.
    config, status = reports[stranger]
    assert config is None and (status.rx_bytes, status.path, status.reason) == (5, None, None)


def test_the_fastest_ipv6_candidate_becomes_the_endpoint(controller: PathController) -> None:
    # The prober's socket cannot reach 2001:db8::/32 from here, so the RTTs the network would give are
    # supplied per probe address; the round, what it records and the endpoint chosen are the real ones.
    slow, fast = ep("[2001:db8::1]:51820"), ep("[2001:db8::2]:51820")
    two = peer(2, endpoints=[str(slow), str(fast)])
    rtts = {probe_address(slow): 0.040, probe_address(fast): 0.002}

    async def ping(peer_id: int, via: object, timeout: float) -> float | None:
        return rtts.get(via) if isinstance(via, tuple) else None

    controller.prober.ping = ping  # type: ignore[method-assign]
    controller.tick(netmap(two), {})
    candidates = [probe_address(e) for e in two.endpoints]
    controller.net.loop.run_until_complete(
        controller._probe_round(2, controller._peers[2], candidates, ping=True, burst=False, via_relay=False)
    )
    assert controller.endpoint_for(two) == fast
