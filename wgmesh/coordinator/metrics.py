"""The coordinator's Prometheus metrics (docs/metrics.md), served at `GET /metrics` on the API listener.

Each app has its own `CollectorRegistry`, so tests that create several apps never collide. Gauges that
mirror the database (nodes, routes, the registry version) are read at scrape time by a custom collector
from the registry snapshot (rebuilt only when the version moves) plus one cheap query for `last_seen`;
nothing is updated on writes. Request latency is labelled with the route *template*
(`/api/v1/nodes/{node}`), never the raw path, so node names and ids never become label values there.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wgmesh.coordinator.registry import ONLINE_WINDOW, Registry
from wgmesh.models import Node
from wgmesh.relay.metrics import RelayCollector
from wgmesh.relay.server import RelayServer, RelayStats
from wgmesh.values import Endpoint, RouteState

ROUTE_STATES = get_args(RouteState)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Up to a minute: a long-poll (`wait` at most 60 s) lands in the last buckets, not in +Inf."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The route label of a request no route matched (scanners' paths never become labels)."""


class RegistryCollector(Collector):
    """Nodes by state, per-node liveness, routes by state and the registry version, read at scrape time."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        snap = self.registry.snapshot()
        # The snapshot's nodes are as of the last version bump; last_seen moves without one.
        nodes = self.registry.list_nodes()
        now = datetime.now(UTC)
        by_state = GaugeMetricFamily(
            "wgmesh_nodes", "Nodes by state (seen within 45 s: online)", labels=["state"]
        )
        online = GaugeMetricFamily(
            "wgmesh_node_online",
            "1 if the node reported within 45 s; role gateway = advertises subnets, static = no agent",
            labels=["node", "role"],
        )
        seen = GaugeMetricFamily(
            "wgmesh_node_last_seen_timestamp_seconds",
            "When the node's last status report arrived (Unix time)",
            labels=["node"],
        )
        counts = {"online": 0, "offline": 0}
        for node in nodes:
            up = node.last_seen is not None and now - node.last_seen < ONLINE_WINDOW
            counts["online" if up else "offline"] += 1
            role = "static" if node.static else ("gateway" if node.subnets else "node")
            online.add_metric([node.name, role], 1.0 if up else 0.0)
            if node.last_seen is not None:
                seen.add_metric([node.name], node.last_seen.timestamp())
        for state, count in counts.items():
            by_state.add_metric([state], count)
        yield by_state
        yield online
        yield seen
        routes = GaugeMetricFamily("wgmesh_routes", "Advertised routes by verdict", labels=["state"])
        route_counts = dict.fromkeys(ROUTE_STATES, 0)
        for route in snap.routes:
            route_counts[route.state] = route_counts.get(route.state, 0) + 1
        for state, count in route_counts.items():
            routes.add_metric([state], count)
        yield routes
        yield GaugeMetricFamily(
            "wgmesh_registry_version", "The registry (netmap) version", value=snap.version
        )


class CoordinatorMetrics:
    """One app's metrics: its registry, the instruments the API code updates, and an embedded relay."""

    def __init__(self, registry: Registry) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "wgmesh_http_request_duration_seconds",
            "API request latency by method, route template and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.enrollments = Counter(
            "wgmesh_enrollments",
            "Enrollment requests by result: ok, or the error code of the refusal",
            ["result"],
            registry=self.registry,
        )
        self.enrollments.labels("ok")
        self.long_polls = Gauge(
            "wgmesh_netmap_long_polls",
            "Netmap requests waiting for a change (long-polls)",
            registry=self.registry,
        )
        self.netmap_delivery = Histogram(
            "wgmesh_netmap_delivery_seconds",
            "From the commit of a registry version (as this coordinator heard of it) to a netmap answer "
            "carrying it: how long a change takes to reach each agent",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(RegistryCollector(registry))
        self._relay: RelayServer | None = None
        self._relay_stats: RelayStats | None = None

    def attach_relay(self, relay: RelayServer) -> None:
        """Expose an embedded relay's metrics here too (`wgmesh-coordinator --relay`)."""
        if self._relay is None:
            self.registry.register(RelayCollector(lambda: self._relay_stats))
        self._relay = relay

    def refresh(self) -> None:
        """Snapshot what lives on the event loop (the relay's connections); call it there, before rendering."""
        if self._relay is not None:
            self._relay_stats = self._relay.stats()

    def enrolled(self, result: str) -> None:
        """Count one enrollment request: `ok` or the refusal's error code."""
        self.enrollments.labels(result).inc()


class RequestMetrics:
    """ASGI middleware: times every HTTP request into `wgmesh_http_request_duration_seconds`."""

    def __init__(self, app: ASGIApp, metrics: CoordinatorMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.histogram = metrics.requests
        self.routes = routes

    def template(self, scope: Scope) -> str:
        """The path template of the route that takes `scope` (a 405 counts for its route too)."""
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return str(getattr(route, "path", UNMATCHED))
        return UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.histogram.labels(method, self.template(scope), str(status)).observe(
                time.perf_counter() - started
            )


def scrape_targets(registry: Registry) -> list[dict[str, object]]:
    """Prometheus HTTP service discovery: every agent's reported metrics address with node labels.

    Only an address of the node's own is listed: its eth0 address, the public address the coordinator
    sees it come from, or its overlay address. Anything else a node reports (10.0.0.5:6379) would make
    Prometheus send requests wherever the node likes. Loopback and wildcard addresses are left out too:
    a Prometheus server elsewhere cannot reach them.
    """
    nodes = {node.id: node for node in registry.snapshot().nodes}
    groups: list[dict[str, object]] = []
    for node_id, status in sorted(registry.statuses().items(), key=lambda item: item[1].node):
        address = status.report.metrics
        node = nodes.get(node_id)
        if address is None or node is None or not _reachable(address) or not _own(address, node):
            continue
        labels = {"node": status.node, "overlay_ip": node.overlay_ip}
        groups.append({"targets": [str(address)], "labels": labels})
    return groups


def _own(address: Endpoint, node: Node) -> bool:
    return address.ip is not None and str(address.ip) in (node.eth0_ip, node.public_ip, node.overlay_ip)


def _reachable(address: Endpoint) -> bool:
    ip = address.ip
    return ip is not None and not (ip.is_loopback or ip.is_unspecified)
