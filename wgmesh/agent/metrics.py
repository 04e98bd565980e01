"""The agent's Prometheus metrics (docs/metrics.md), served by `--metrics-listen` (default 127.0.0.1:9586).

Nothing here talks to WireGuard: the path tick already reads the device's counters twice a second and
hands them to `stats_seen`; a scrape renders that cache, the path controller's decisions, the relay
links and the shim's counters. Events (path switches, applies) are counted where they happen.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Protocol, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from wgmesh.agent.dataplane import ApplyResult
from wgmesh.agent.path_control import PathController
from wgmesh.agent.wgstate import PeerStats
from wgmesh.logs import kv
from wgmesh.models import NetMap
from wgmesh.values import Endpoint, PathKind

log = logging.getLogger("wgmesh.agent")

APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PATHS = get_args(PathKind)


class Observed(Protocol):
    """What the collector reads from the agent at scrape time."""

    netmap: NetMap | None
    reachable: bool
    paths: PathController


class _AgentCollector(Collector):
    """Per-peer counters, handshakes, paths and RTTs; coordinator, netmap, relay links and the shim."""

    def __init__(self, owner: AgentMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterable[Metric]:
        agent = self.owner.agent
        netmap = agent.netmap
        stats = self.owner.latest_stats()
        rx = CounterMetricFamily("wgmesh_peer_rx_bytes", "Bytes received from the peer", labels=["peer"])
        tx = CounterMetricFamily("wgmesh_peer_tx_bytes", "Bytes sent to the peer", labels=["peer"])
        handshake = GaugeMetricFamily(
            "wgmesh_peer_last_handshake_timestamp_seconds",
            "Unix time of the peer's last WireGuard handshake (0: none yet)",
            labels=["peer"],
        )
        path = GaugeMetricFamily(
            "wgmesh_peer_path", "1 for the path the peer's traffic takes now", labels=["peer", "path"]
        )
        rtt = GaugeMetricFamily("wgmesh_peer_rtt_seconds", "RTT of the peer's current path", labels=["peer"])
        for peer in netmap.peers if netmap else []:
            st = stats.get(peer.public_key)
            if st is not None:
                rx.add_metric([peer.name], st.rx_bytes)
                tx.add_metric([peer.name], st.tx_bytes)
                when = st.last_handshake.timestamp() if st.last_handshake else 0.0
                handshake.add_metric([peer.name], when)
            view = agent.paths.view(peer.node_id, st.endpoint if st else None)
            if view.path is not None:
                for name in PATHS:
                    path.add_metric([peer.name, name], 1.0 if view.path == name else 0.0)
            if view.rtt is not None:
                rtt.add_metric([peer.name], view.rtt)
        yield from (rx, tx, handshake, path, rtt)
        yield GaugeMetricFamily(
            "wgmesh_agent_coordinator_reachable",
            "1 if the last call to the coordinator got an answer",
            value=1.0 if agent.reachable else 0.0,
        )
        if netmap is not None:
            yield GaugeMetricFamily(
                "wgmesh_agent_netmap_version", "Version of the netmap applied", value=netmap.version
            )
        shim = agent.paths.shim
        up = GaugeMetricFamily("wgmesh_agent_relay_up", "1 if the relay connection is up", labels=["relay"])
        relay_rtt = GaugeMetricFamily(
            "wgmesh_agent_relay_rtt_seconds", "RTT of the relay connection (relay pings)", labels=["relay"]
        )
        for link in shim.views():
            up.add_metric([link.id], 1.0 if link.up else 0.0)
            if link.up and link.rtt is not None:
                relay_rtt.add_metric([link.id], link.rtt)
        yield from (up, relay_rtt)
        counters = shim.counters
        moved = CounterMetricFamily(
            "wgmesh_shim_datagrams", "Datagrams the relay shim carried", labels=["direction"]
        )
        moved.add_metric(["to_relay"], counters.to_relay)
        moved.add_metric(["to_direct"], counters.to_direct)  # direct TCP links to peers' agents
        moved.add_metric(["from_relay"], counters.from_relay)  # to WireGuard, from relays and direct links
        moved.add_metric(["from_direct"], counters.from_direct)  # of which over direct TCP links
        yield moved
        drops = CounterMetricFamily(
            "wgmesh_shim_dropped_datagrams", "Datagrams the relay shim dropped, by reason", labels=["reason"]
        )
        for reason, count in sorted(dict(counters.dropped).items()):
            drops.add_metric([reason], count)
        yield drops
        refused = CounterMetricFamily(
            "wgmesh_shim_relay_refusals",
            "Relay connections refused because the relay presented another key than its pin",
            labels=["relay"],
        )
        for relay, count in sorted(dict(counters.refused_relays).items()):
            refused.add_metric([relay], count)
        yield refused
        direct = agent.paths.direct_tcp
        yield GaugeMetricFamily(
            "wgmesh_direct_tcp_links", "Direct TCP links carrying a peer now", value=direct.links_up()
        )
        strangers = CounterMetricFamily(
            "wgmesh_direct_tcp_refusals",
            "Inbound direct TCP connections refused: proof (not a peer, or a bad proof), busy (too many in "
            "their hellos), protocol (anything but a hello first)",
            labels=["reason"],
        )
        for reason, count in sorted(dict(direct.refused).items()):
            strangers.add_metric([reason], count)
        yield strangers


class AgentMetrics:
    """The agent's registry and instruments, and its `/metrics` listener."""

    def __init__(self, agent: Observed) -> None:
        self.agent = agent
        self.registry = CollectorRegistry()
        self.switches = Counter(
            "wgmesh_path_switches",
            "Path switches by peer and reason code (the code of the new path's decision)",
            ["peer", "reason"],
            registry=self.registry,
        )
        self.ha_moves = Counter(
            "wgmesh_ha_moves",
            "HA prefixes moved to another member of their group, by prefix and reason code (agent/ha.py)",
            ["prefix", "reason"],
            registry=self.registry,
        )
        self.apply_seconds = Histogram(
            "wgmesh_reconcile_duration_seconds",
            "Time one apply of the netmap to the interface and routes took",
            buckets=APPLY_BUCKETS,
            registry=self.registry,
        )
        self.apply_operations = Counter(
            "wgmesh_reconcile_operations",
            "Changes applies made, by kind: device (peers), route, other (address, forwarding, firewall)",
            ["kind"],
            registry=self.registry,
        )
        for kind in ("device", "route", "other"):
            self.apply_operations.labels(kind)
        self.listen: tuple[str, int] | None = None
        self._stats: Mapping[str, PeerStats] = {}
        self._lock = threading.Lock()
        self._server: WSGIServer | None = None
        self.registry.register(_AgentCollector(self))

    # -- fed by the agent -----------------------------------------------------------------------

    def stats_seen(self, stats: Mapping[str, PeerStats]) -> None:
        """The device's per-peer counters as the path tick just read them."""
        with self._lock:
            self._stats = stats

    def latest_stats(self) -> Mapping[str, PeerStats]:
        """The last counters handed to `stats_seen`."""
        with self._lock:
            return self._stats

    def path_switched(self, peer: str, reason: str) -> None:
        """Count one switch of `peer`'s path, with the reason code of the decision."""
        self.switches.labels(peer, reason).inc()

    def ha_moved(self, prefix: object, reason: str) -> None:
        """Count one move of an HA prefix, with the reason code of the decision."""
        self.ha_moves.labels(str(prefix), reason).inc()

    def applied(self, result: ApplyResult) -> None:
        """Time and operations of one apply."""
        self.apply_seconds.observe(result.seconds)
        other = max(result.operations - result.device_ops - result.route_ops, 0)
        for kind, count in (("device", result.device_ops), ("route", result.route_ops), ("other", other)):
            if count:
                self.apply_operations.labels(kind).inc(count)

    # -- the listener ---------------------------------------------------------------------------

    def start(self, listen: tuple[str, int] | None) -> None:
        """Serve `/metrics` on `listen` (None: off); a taken port is logged, the agent runs on without it."""
        if listen is None:
            return
        host, port = listen
        try:
            server, _ = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            log.error("cannot serve metrics", extra=kv(host=host, port=port, error=exc.strerror or str(exc)))
            return
        self._server = server
        self.listen = (host, int(server.server_address[1]))
        log.info("metrics listening", extra=kv(host=host, port=self.listen[1]))

    def stop(self) -> None:
        """Close the listener."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def advertised(self, eth0: str | None) -> Endpoint | None:
        """The `ADDRESS:PORT` to put in status reports: a wildcard listener is announced on eth0."""
        if self.listen is None:
            return None
        host, port = self.listen
        if ipaddress.ip_address(host).is_unspecified:
            return None if eth0 is None else Endpoint(eth0, port)
        return Endpoint(host, port)
