"""The coordinator's HTTP API: the operation table, and `create_app`, which wires the registry, the routes
and the middleware. The handlers live in `wgmesh.coordinator.handlers`, grouped by who calls them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wgmesh import __version__, malloc
from wgmesh.coordinator import sweeps
from wgmesh.coordinator.changes import ChangeNotifier
from wgmesh.coordinator.handlers import admin, audit, dashboard, node, relay, service
from wgmesh.coordinator.handlers.admin import PairSet
from wgmesh.coordinator.handlers.auth import authenticate
from wgmesh.coordinator.handlers.context import Context, Settings
from wgmesh.coordinator.handlers.errors import on_http_error, on_unexpected, on_wgmesh_error
from wgmesh.coordinator.handlers.node import StatusAck
from wgmesh.coordinator.handlers.throttle import RateLimit
from wgmesh.coordinator.listener import change_feed
from wgmesh.coordinator.metrics import CoordinatorMetrics, RequestMetrics
from wgmesh.coordinator.operations import (
    MAX_BODY,
    NETMAPS,
    REPORT_MAX_BODY,
    REPORTS,
    Operation,
    Query,
    error_response,
    openapi_document,
    to_route,
)
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.sessions import SessionTable
from wgmesh.errors import PayloadTooLargeError, WgmeshError
from wgmesh.models import (
    AdminTokenCreate,
    AdminTokenCreated,
    AdminTokenInfo,
    AdminTokenList,
    AuditList,
    EnrollRequest,
    EnrollResponse,
    Health,
    Heartbeat,
    HeartbeatAck,
    KeyRotated,
    KeyRotation,
    NetMap,
    NetMapChange,
    Network,
    NetworkPatch,
    Node,
    NodeCreate,
    NodeList,
    NodePatch,
    NodeStatus,
    PairList,
    PairPolicy,
    RelayGrant,
    RevocationList,
    RouteAlias,
    RouteDecision,
    RouteList,
    SessionInfo,
    SessionLogin,
    StatusList,
    StatusReport,
    SubnetsUpdate,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    TokenList,
    Topology,
    TopologyLinkPage,
    TopologyNode,
    TopologyNodePage,
    TopologySummary,
    WgQuickConfig,
)
from wgmesh.models import Route as RouteAnswer  # `Route` here is Starlette's

__all__ = ["MAX_BODY", "OPERATIONS", "BodyLimit", "Settings", "create_app", "create_metrics_app"]


# The one table of the API: it drives the routes (create_app) and the OpenAPI document.
OPERATIONS: list[Operation] = [
    Operation("GET", "/healthz", service.healthz, "Liveness and registry version", "none", response=Health),
    Operation(
        "POST",
        "/api/v1/enroll",
        node.enroll,
        "Redeem an enrollment token for a node",
        "none",
        body=EnrollRequest,
        response=EnrollResponse,
        status=201,
    ),
    Operation(
        "GET",
        "/api/v1/netmap",
        node.get_netmap,
        "The node's netmap; long-polls for a change",
        "node",
        response=NetMap,
        query=(
            Query("since", "integer", "answer at once if the version is newer than this"),
            Query("wait", "number", "seconds to hold the request for a change (at most 60)"),
        ),
        extra_responses={304: "no change within `wait` seconds"},
        lane=NETMAPS,
    ),
    Operation(
        "GET",
        "/api/v1/netmap/changes",
        node.get_netmap_changes,
        "The node's netmap as the change from the version it holds; long-polls for a change",
        "node",
        response=NetMapChange,
        query=(
            Query("since", "integer", "the version the agent holds: the answer is the change from it"),
            Query("wait", "number", "seconds to hold the request for a change (at most 60)"),
        ),
        extra_responses={304: "no change within `wait` seconds"},
        lane=NETMAPS,
    ),
    Operation(
        "POST",
        "/api/v1/status",
        node.post_status,
        "Report endpoints and peer state",
        "node",
        body=StatusReport,
        response=StatusAck,
        max_body=REPORT_MAX_BODY,
        lane=REPORTS,
    ),
    Operation(
        "POST",
        "/api/v1/node/heartbeat",
        node.post_heartbeat,
        "Say the node is alive and its last report stands but for counters (agents with many peers send "
        "their report whole only when it changed)",
        "node",
        body=Heartbeat,
        response=HeartbeatAck,
    ),
    Operation(
        "PUT",
        "/api/v1/node/subnets",
        node.put_own_subnets,
        "Replace the node's advertised subnets",
        "node",
        body=SubnetsUpdate,
        response=RouteList,
    ),
    Operation(
        "POST",
        "/api/v1/node/key",
        node.rotate_own_key,
        "The node takes a new WireGuard key (its agent made it); answers a new credential",
        "node",
        body=KeyRotation,
        response=KeyRotated,
    ),
    Operation(
        "GET",
        "/api/v1/node/relay",
        node.get_relay_grant,
        "The relays and a fresh relay ticket for the node",
        "node",
        response=RelayGrant,
    ),
    Operation(
        "GET",
        "/api/v1/relay/revocations",
        relay.get_revocations,
        "Deleted nodes whose relay tickets relays must refuse",
        "relay",
        response=RevocationList,
    ),
    Operation(
        "GET", "/api/v1/network", admin.get_network, "The overlay network", "admin-read", response=Network
    ),
    Operation(
        "PATCH",
        "/api/v1/network",
        admin.patch_network,
        "Change network-wide settings",
        "admin",
        body=NetworkPatch,
        response=Network,
        audit="network.update",
    ),
    Operation(
        "POST",
        "/api/v1/tokens",
        admin.create_token,
        "Create an enrollment token",
        "admin",
        body=TokenCreate,
        response=TokenCreated,
        status=201,
        audit="token.create",
    ),
    Operation(
        "GET", "/api/v1/tokens", admin.list_tokens, "List enrollment tokens", "admin-read", response=TokenList
    ),
    Operation(
        "DELETE",
        "/api/v1/tokens/{token_id}",
        admin.revoke_token,
        "Revoke an enrollment token",
        "admin",
        response=TokenInfo,
        audit="token.revoke",
    ),
    Operation("GET", "/api/v1/nodes", admin.list_nodes, "List nodes", "admin-read", response=NodeList),
    Operation(
        "POST",
        "/api/v1/nodes",
        admin.create_node,
        "Create a static peer",
        "admin",
        body=NodeCreate,
        response=Node,
        status=201,
        audit="node.create",
    ),
    Operation("GET", "/api/v1/nodes/{node}", admin.get_node, "One node", "admin-read", response=Node),
    Operation(
        "PATCH",
        "/api/v1/nodes/{node}",
        admin.patch_node,
        "Change a node",
        "admin",
        body=NodePatch,
        response=Node,
        audit="node.update",
    ),
    Operation(
        "DELETE",
        "/api/v1/nodes/{node}",
        admin.delete_node,
        "Delete a node",
        "admin",
        response=Node,
        audit="node.delete",
    ),
    Operation(
        "POST",
        "/api/v1/nodes/{node}/rotate-key",
        admin.rotate_node_key,
        "Ask the node's agent to rotate its WireGuard key and credential (a static peer with generated "
        "keys gets new ones at once)",
        "admin",
        response=Node,
        audit="node.rotate",
    ),
    Operation(
        "GET",
        "/api/v1/nodes/{node}/status",
        admin.get_node_status,
        "A node's last status report",
        "admin-read",
        response=NodeStatus,
    ),
    Operation(
        "GET",
        "/api/v1/nodes/{node}/config",
        admin.get_node_config,
        "A static peer's wg-quick configuration, with its private key",
        "admin-read",
        response=WgQuickConfig,
        audit="node.export_config",
    ),
    Operation(
        "GET",
        "/api/v1/statuses",
        admin.list_statuses,
        "The last status report of every node",
        "admin-read",
        response=StatusList,
    ),
    Operation(
        "GET",
        "/api/v1/routes",
        admin.list_routes,
        "Routes with their verdicts",
        "admin-read",
        response=RouteList,
    ),
    Operation(
        "POST",
        "/api/v1/nodes/{node}/routes/approve",
        admin.approve_route,
        "Approve a prefix the node advertises (needed outside private space and to join another gateway)",
        "admin",
        body=RouteDecision,
        response=RouteAnswer,
        audit="route.approve",
    ),
    Operation(
        "POST",
        "/api/v1/nodes/{node}/routes/reject",
        admin.reject_route,
        "Reject a prefix the node advertises: it stays out of every netmap while advertised",
        "admin",
        body=RouteDecision,
        response=RouteAnswer,
        audit="route.reject",
    ),
    Operation(
        "POST",
        "/api/v1/nodes/{node}/routes/alias",
        admin.alias_route,
        "Publish a prefix the node advertises under an alias of the same length (1:1 prefix translation at "
        "the gateway), or back at itself",
        "admin",
        body=RouteAlias,
        response=RouteAnswer,
        audit="route.alias",
    ),
    Operation(
        "GET",
        "/api/v1/pairs",
        admin.list_pairs,
        "P2P overrides per node pair",
        "admin-read",
        response=PairList,
    ),
    Operation(
        "PUT",
        "/api/v1/pairs/{a}/{b}",
        admin.set_pair,
        "Set or clear a pair's P2P override",
        "admin",
        body=PairSet,
        response=PairPolicy,
        extra_responses={204: "override cleared"},
        audit="pair.set",
    ),
    Operation(
        "GET",
        "/api/v1/topology",
        admin.get_topology,
        "Nodes, links, routes and warnings",
        "admin-read",
        response=Topology,
    ),
    Operation(
        "GET",
        "/api/v1/topology/summary",
        admin.get_topology_summary,
        "The topology in counts: nodes, links, routes, warnings; groups by tag, site and problem",
        "admin-read",
        response=TopologySummary,
    ),
    Operation(
        "GET",
        "/api/v1/topology/nodes",
        admin.get_topology_nodes,
        "A page of nodes with their links by state, filtered by tag, site, problem or name",
        "admin-read",
        response=TopologyNodePage,
        query=(
            Query("tag", "string", "only nodes with this tag (`region:eu-west-1`)"),
            Query("site", "string", "only nodes of this site"),
            Query(
                "problem", "string", "only nodes with this problem: offline, links_down, relayed, conflicts"
            ),
            Query("name", "string", "only nodes whose name contains this"),
            Query("offset", "integer", "nodes to skip (default 0)"),
            Query("limit", "integer", "nodes in the page (default 100, at most 500)"),
        ),
    ),
    Operation(
        "GET",
        "/api/v1/topology/nodes/{node}",
        admin.get_topology_node,
        "One node with every other node as it sees them (its peers), as in the whole topology",
        "admin-read",
        response=TopologyNode,
    ),
    Operation(
        "GET",
        "/api/v1/topology/nodes/{node}/links",
        admin.get_topology_links,
        "A page of one node's links, sorted by the other node's name",
        "admin-read",
        response=TopologyLinkPage,
        query=(
            Query("state", "string", "only links in this state: direct, relay, down, unknown"),
            Query("offset", "integer", "links to skip (default 0)"),
            Query("limit", "integer", "links in the page (default 100, at most 500)"),
        ),
    ),
    Operation(
        "POST",
        "/api/v1/session",
        dashboard.login,
        "Dashboard login: exchange the admin token for an HttpOnly session cookie",
        "none",
        body=SessionLogin,
        response=SessionInfo,
        status=201,
        audit="session.login",
    ),
    Operation(
        "GET",
        "/api/v1/session",
        dashboard.get_session,
        "The session of the cookie, with its CSRF token",
        "none",
        response=SessionInfo,
    ),
    Operation(
        "DELETE",
        "/api/v1/session",
        dashboard.logout,
        "Dashboard logout (needs the X-CSRF-Token header)",
        "none",
        extra_responses={204: "logged out"},
        audit="session.logout",
    ),
    Operation(
        "GET",
        "/api/v1/events",
        dashboard.events,
        "Server-sent events: `change` with the registry version after writes, `heartbeat` every 15 s",
        "admin-read",
    ),
    Operation(
        "GET",
        "/api/v1/prometheus/targets",
        admin.prometheus_targets,
        "Prometheus HTTP service discovery: every agent's metrics address with node labels",
        "admin-read",
    ),
    Operation(
        "POST",
        "/api/v1/admin-tokens",
        admin.create_admin_token,
        "Create a named admin token (read-only: sees everything, changes nothing); its secret is shown once",
        "admin",
        body=AdminTokenCreate,
        response=AdminTokenCreated,
        status=201,
        audit="admin_token.create",
    ),
    Operation(
        "GET",
        "/api/v1/admin-tokens",
        admin.list_admin_tokens,
        "List admin tokens, revoked ones included",
        "admin-read",
        response=AdminTokenList,
    ),
    Operation(
        "DELETE",
        "/api/v1/admin-tokens/{name}",
        admin.revoke_admin_token,
        "Revoke an admin token at once, with the dashboard sessions opened with it",
        "admin",
        response=AdminTokenInfo,
        audit="admin_token.revoke",
    ),
    Operation(
        "GET",
        "/api/v1/audit",
        audit.list_audit,
        "The audit log: every admin change, oldest first",
        "admin-read",
        response=AuditList,
        query=(
            Query("since", "string", "only entries at or after this ISO 8601 time"),
            Query("limit", "integer", "the latest this many entries (default 100, at most 1000)"),
        ),
    ),
]


BODY_CEILING = max(op.max_body for op in OPERATIONS)
"""No request body is ever larger, whatever its path (each operation reads its own limit, read_body)."""
TRIM_EVERY = 30.0
"""Seconds between two returns of the heap's free pages to the system (malloc.py): a burst's memory is
given back within half a minute of it, for a few milliseconds of one thread."""


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, declared or streamed: a ceiling for every path,
    before routing; each operation's own (smaller) limit is applied as its body is read."""

    def __init__(self, app: ASGIApp, limit: int = BODY_CEILING) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                response = error_response(
                    "payload_too_large", f"request body is over {self.limit} bytes", 413
                )
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise PayloadTooLargeError(f"request body is over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


def create_app(
    registry: Registry, settings: Settings | None = None, sessions: SessionTable | None = None
) -> Starlette:
    """The coordinator's ASGI application."""
    notifier = ChangeNotifier()
    registry.store.on_change(notifier.notify_threadsafe)
    metrics = CoordinatorMetrics(registry)
    context = Context(
        registry=registry,
        settings=settings or Settings(),
        sessions=sessions if sessions is not None else SessionTable(registry.store),
        notifier=notifier,
        metrics=metrics,
        openapi=openapi_document(OPERATIONS, title="wgmesh coordinator", version=__version__),
    )
    routes = [to_route(op, authenticate, audit.record) for op in OPERATIONS]
    routes.append(Route("/api/v1/openapi.json", service.openapi, methods=["GET"]))
    routes.append(Route("/", dashboard.dashboard, methods=["GET"]))
    routes.append(Route("/assets/{name}", dashboard.dashboard, methods=["GET"]))
    app = Starlette(
        routes=routes,
        lifespan=_lifespan,
        exception_handlers={
            WgmeshError: on_wgmesh_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
    app.state.context = context  # what the handlers read (handlers.context.context), and nothing else
    app.add_middleware(BodyLimit)
    app.add_middleware(RateLimit, limits=context.settings.limits, trusted=context.settings.trusted_proxies)
    app.add_middleware(RequestMetrics, metrics=metrics, routes=routes)
    return app


def create_metrics_app(api: Starlette) -> Starlette:
    """The Prometheus scrape of `api` (its registry, requests and embedded relay) as an application of its own,
    for its own listener (`--metrics-listen`): /metrics names every node, so it is not on the API's port."""
    app = Starlette(routes=[Route("/metrics", service.metrics_text, methods=["GET"])])
    app.state.context = api.state.context
    return app


def _heard(ctx: Context, version: int) -> None:
    """A change another coordinator committed (or 0: the listener reconnected): the store learns the
    version before the long-polls wake and look it up."""
    ctx.registry.store.heard(version)
    ctx.notifier.notify_threadsafe(version)


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    ctx: Context = app.state.context
    # writes commit on worker threads; the notifier wakes long polls on the loop that serves them
    ctx.notifier.bind(asyncio.get_running_loop())
    # other coordinators' writes, on a shared database (none on SQLite: Store.on_change hears them all)
    feed = change_feed(ctx.registry.store)
    if feed is not None:
        feed.start(partial(_heard, ctx))
    sweeping = asyncio.create_task(sweeps.run(ctx.registry.store, ctx.sessions))
    trimming = asyncio.create_task(malloc.trim_every(TRIM_EVERY))
    try:
        yield
    finally:
        for task in (sweeping, trimming):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if feed is not None:
            await asyncio.to_thread(feed.stop)
        # The last second's heartbeats, or nodes would look offline a little early after a restart.
        with contextlib.suppress(WgmeshError):
            await asyncio.to_thread(ctx.registry.last_seen.flush)
