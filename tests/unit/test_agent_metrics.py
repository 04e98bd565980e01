"""The agent's metrics (docs/metrics.md) rendered from what the agent already holds, and `metrics_listen`."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wgmesh.agent.config import parse_metrics_listen
from wgmesh.agent.dataplane import ApplyResult
from wgmesh.agent.metrics import AgentMetrics
from wgmesh.agent.path_control import PeerPathView
from wgmesh.agent.shim import RelayView, ShimCounters
from wgmesh.agent.wgstate import PeerStats
from wgmesh.errors import ValidationError
from wgmesh.values import Endpoint

ep = Endpoint.parse

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class FakePaths:
    def __init__(self) -> None:
        self.views = {2: PeerPathView("relay", 0.012, "probes failed", "r1")}
        counters = ShimCounters(to_relay=7, from_relay=5, to_direct=11, from_direct=4)
        counters.drop("relay_down", 3)
        counters.refused_relays["r2"] = 2  # presented another key than its pin, twice
        self.shim = SimpleNamespace(
            counters=counters, views=lambda: [RelayView("r1", "tcp://198.18.0.1:8443", True, 0.004, None)]
        )
        # One direct TCP link up; strangers refused for a bad proof twice, once for being busy.
        self.direct_tcp = SimpleNamespace(links_up=lambda: 1, refused={"proof": 2, "busy": 1})

    def view(self, peer_id: int, endpoint: str | None) -> PeerPathView:
        return self.views.get(peer_id, PeerPathView(None, None, None, None))


def agent() -> SimpleNamespace:
    peers = [
        SimpleNamespace(name="gw2", node_id=2, public_key="K2"),
        SimpleNamespace(name="gw3", node_id=3, public_key="K3"),
    ]
    return SimpleNamespace(netmap=SimpleNamespace(peers=peers, version=41), reachable=True, paths=FakePaths())


def render(metrics: AgentMetrics) -> Samples:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_renders_the_cached_stats_paths_and_events() -> None:
    metrics = AgentMetrics(agent())
    handshake = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    metrics.stats_seen({"K2": PeerStats(1000, 2000, handshake, ep("127.0.0.1:40000")), "K9": PeerStats(5, 5)})
    metrics.path_switched("gw2", "probes_failed")
    metrics.applied(ApplyResult(operations=4, device_ops=1, route_ops=2, seconds=0.02))
    s = render(metrics)
    assert s[("wgmesh_peer_rx_bytes_total", frozenset({("peer", "gw2")}))] == 1000
    assert s[("wgmesh_peer_tx_bytes_total", frozenset({("peer", "gw2")}))] == 2000
    assert (
        s[("wgmesh_peer_last_handshake_timestamp_seconds", frozenset({("peer", "gw2")}))]
        == handshake.timestamp()
    )
    assert s[("wgmesh_peer_path", frozenset({("peer", "gw2"), ("path", "relay")}))] == 1
    assert s[("wgmesh_peer_path", frozenset({("peer", "gw2"), ("path", "direct")}))] == 0
    assert s[("wgmesh_peer_rtt_seconds", frozenset({("peer", "gw2")}))] == 0.012
    assert s[("wgmesh_path_switches_total", frozenset({("peer", "gw2"), ("reason", "probes_failed")}))] == 1
    assert s[("wgmesh_reconcile_duration_seconds_count", frozenset())] == 1
    for kind, count in (("device", 1), ("route", 2), ("other", 1)):
        assert s[("wgmesh_reconcile_operations_total", frozenset({("kind", kind)}))] == count
    assert s[("wgmesh_agent_coordinator_reachable", frozenset())] == 1
    assert s[("wgmesh_agent_netmap_version", frozenset())] == 41
    assert s[("wgmesh_agent_relay_up", frozenset({("relay", "r1")}))] == 1
    assert s[("wgmesh_agent_relay_rtt_seconds", frozenset({("relay", "r1")}))] == 0.004
    assert s[("wgmesh_shim_datagrams_total", frozenset({("direction", "to_relay")}))] == 7
    assert s[("wgmesh_shim_dropped_datagrams_total", frozenset({("reason", "relay_down")}))] == 3
    assert s[("wgmesh_shim_relay_refusals_total", frozenset({("relay", "r2")}))] == 2
    assert s[("wgmesh_shim_datagrams_total", frozenset({("direction", "to_direct")}))] == 11
    assert s[("wgmesh_shim_datagrams_total", frozenset({("direction", "from_direct")}))] == 4
    assert s[("wgmesh_direct_tcp_links", frozenset())] == 1
    assert s[("wgmesh_direct_tcp_refusals_total", frozenset({("reason", "proof")}))] == 2
    assert s[("wgmesh_direct_tcp_refusals_total", frozenset({("reason", "busy")}))] == 1
    # gw3 has neither counters nor a decision yet; K9 is not in the netmap: no series for either
    assert not [k for k in s if ("peer", "gw3") in k[1]]
    assert not [k for k in s if ("peer", "K9") in k[1]]


def test_advertised_address_replaces_a_wildcard_with_eth0() -> None:
    metrics = AgentMetrics(agent())
    assert metrics.advertised("198.18.0.11") is None  # not listening
    metrics.listen = ("0.0.0.0", 9586)
    assert metrics.advertised("198.18.0.11") == ep("198.18.0.11:9586")
    assert metrics.advertised(None) is None
    metrics.listen = ("198.18.0.12", 9586)
    assert metrics.advertised("198.18.0.11") == ep("198.18.0.12:9586")
    metrics.listen = ("fd00::1", 9586)
    assert metrics.advertised(None) == ep("[fd00::1]:9586")


def test_listener_serves_and_stops() -> None:
    metrics = AgentMetrics(agent())
    metrics.start(("127.0.0.1", 0))
    try:
        assert metrics.listen is not None and metrics.listen[1] > 0
        r = httpx.get(f"http://127.0.0.1:{metrics.listen[1]}/metrics", timeout=5, trust_env=False)
        assert r.status_code == 200
        assert "wgmesh_agent_coordinator_reachable 1.0" in r.text
    finally:
        metrics.stop()


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("off", None), ("127.0.0.1:9586", ("127.0.0.1", 9586)), ("[::1]:9586", ("::1", 9586))],
)
def test_metrics_listen_parses(text: str, parsed: tuple[str, int] | None) -> None:
    assert parse_metrics_listen(text) == parsed


@pytest.mark.parametrize("text", ["", "9586", "localhost:9586", "127.0.0.1:", "127.0.0.1:99999", "on"])
def test_metrics_listen_refuses(text: str) -> None:
    with pytest.raises(ValidationError, match="ADDRESS:PORT or off"):
        parse_metrics_listen(text)
