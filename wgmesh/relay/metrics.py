"""The relay's Prometheus metrics (docs/metrics.md) and a tiny `/metrics` responder on the relay's own loop.

The counters already live in `RelayServer.counters`; a custom collector turns a `RelayStats` snapshot into
metric families at scrape time, so the hot path pays nothing for metrics. The snapshot must be taken on
the relay's event loop (`RelayServer.stats` walks the live connections): the standalone relay answers
scrapes on that loop itself, and the coordinator takes the snapshot on its loop before it renders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from wgmesh import logs
from wgmesh.relay.server import DROP_REASONS, RelayError, RelayServer, RelayStats

log = logging.getLogger("wgmesh.relay")

REQUEST_LIMIT = 8192
"""Bytes of request line and headers a scrape may send before it is refused."""
REQUEST_TIMEOUT = 5.0


class RelayCollector(Collector):
    """Relay counters as metric families; `source` returns the latest snapshot (None: no relay)."""

    def __init__(self, source: Callable[[], RelayStats | None]) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        stats = self.source()
        if stats is None:
            return
        yield GaugeMetricFamily(
            "wgmesh_relay_connected_nodes",
            "Nodes with an authenticated relay connection",
            stats.connected_nodes,
        )
        yield CounterMetricFamily(
            "wgmesh_relay_forwarded_frames", "Data frames written to receivers", stats.frames_forwarded
        )
        yield CounterMetricFamily(
            "wgmesh_relay_forwarded_bytes",
            "Frame bytes (header, peer id, datagram) written to receivers",
            stats.bytes_forwarded,
        )
        drops = CounterMetricFamily(
            "wgmesh_relay_dropped_frames", "Data frames dropped, by reason", labels=["reason"]
        )
        for reason in sorted(set(DROP_REASONS) | set(stats.drops)):
            drops.add_metric([reason], stats.drops.get(reason, 0))
        yield drops
        yield GaugeMetricFamily(
            "wgmesh_relay_queue_bytes",
            "Bytes waiting in the send buffers of all connections",
            stats.queue_bytes,
        )
        yield CounterMetricFamily(
            "wgmesh_relay_connections", "TCP (or TLS) connections accepted", stats.connections_total
        )
        closes = CounterMetricFamily(
            "wgmesh_relay_closes",
            "Close frames sent, by close code: refusals (bad_ticket, ticket_expired, …) and others",
            labels=["code"],
        )
        for code, count in sorted(stats.refused.items()):
            closes.add_metric([code], count)
        yield closes


def relay_registry(relay: RelayServer) -> CollectorRegistry:
    """A registry holding the metrics of `relay`, read live (call `generate_latest` on the relay's loop)."""
    registry = CollectorRegistry()
    registry.register(RelayCollector(relay.stats))
    return registry


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> asyncio.Server:
    """Answer `GET /metrics` with the registry's text format on the running loop; RelayError if taken."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            target = rest.partition(" ")[0].partition("?")[0]
            if method not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif target != "/metrics":
                status, ctype, body = "404 Not Found", "text/plain", b"see /metrics\n"
            else:
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(registry)
            header = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode("latin-1")
            writer.write(header if method == "HEAD" else header + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    try:
        server = await asyncio.start_server(handle, host, port, limit=REQUEST_LIMIT, reuse_address=True)
    except OSError as error:
        raise RelayError(f"cannot listen for metrics on {host}:{port}: {error.strerror or error}") from None
    bound = server.sockets[0].getsockname()[1] if server.sockets else port
    log.info("metrics listening", extra=logs.kv(host=host, port=bound))
    return server
