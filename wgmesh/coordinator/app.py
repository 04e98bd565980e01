"""The coordinator's HTTP API: Starlette routes over the registry, errors mapped in one place."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wgmesh import __version__
from wgmesh.coordinator.changes import ChangeNotifier
from wgmesh.coordinator.metrics import CoordinatorMetrics, RequestMetrics, scrape_targets
from wgmesh.coordinator.operations import (
    Call,
    Operation,
    Query,
    error_response,
    json_response,
    openapi_document,
    to_route,
)
from wgmesh.coordinator.registry import Registry, row_id
from wgmesh.coordinator.sessions import COOKIE, SessionTable, check_csrf, cookie_session
from wgmesh.errors import AuthError, NotFoundError, PayloadTooLargeError, ValidationError, WgmeshError
from wgmesh.logs import kv
from wgmesh.models import (
    EnrollRequest,
    EnrollResponse,
    Health,
    Model,
    NetMap,
    Network,
    NetworkPatch,
    Node,
    NodeCreate,
    NodeList,
    NodePatch,
    NodeStatus,
    PairList,
    PairPolicy,
    Rate,
    RelayGrant,
    RelayInfo,
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
    WgQuickConfig,
)
from wgmesh.netmap import wg_quick_config
from wgmesh.values import NodeId, P2PPolicy, Prefix

log = logging.getLogger("wgmesh.coordinator")

MAX_BODY = 1024 * 1024
MAX_WAIT = 60.0
HEARTBEAT = 15.0  # seconds between keep-alive events on /api/v1/events
EVENT_COALESCE = 0.25  # seconds: a burst of writes becomes one event
ASSET = re.compile(r"^[a-z0-9-]+\.(js|css|svg)$")
DASHBOARD_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def web_root() -> Path:
    """The dashboard's files: $WGMESH_WEB_DIR, else `web/` next to the package (source or editable install)."""
    configured = os.environ.get("WGMESH_WEB_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "web"


class StatusAck(Model):
    """The answer to a status report."""

    version: int
    changed: bool


class PairSet(Model):
    """A pair's overrides; a field given as null clears it, an omitted field stays as it is."""

    p2p: P2PPolicy | None = Field(None, description="auto, off, or null to clear the override")
    rate: Rate | None = Field(None, description="limit each way, e.g. 20mbit, or null to remove it")


@dataclass
class Settings:
    """How the API is exposed."""

    trusted_proxies: Sequence[Prefix] = field(default_factory=list)
    relays: Sequence[RelayInfo] = field(default_factory=list)
    """Relays announced to agents with their tickets (`--announce-relay`, `--relay`)."""


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
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


def client_address(request: Request, trusted: Sequence[Prefix]) -> str | None:
    """The address a request came from; X-Forwarded-For counts only behind a trusted proxy."""
    peer = request.client.host if request.client else None
    if peer is None or not trusted:
        return peer
    hop = ipaddress.ip_address(peer)
    if not any(hop in net for net in trusted):
        return peer
    chain = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for candidate in reversed(chain):
        try:
            addr = ipaddress.ip_address(candidate)
        except ValueError:
            return peer
        if not any(addr in net for net in trusted):
            return str(addr)
    return peer


def bearer(request: Request) -> str:
    """The bearer token of a request, or AuthError."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing bearer token (Authorization: Bearer …)", code="missing_credentials")
    return token.strip()


def create_app(
    registry: Registry, settings: Settings | None = None, sessions: SessionTable | None = None
) -> Starlette:
    """The coordinator's ASGI application."""
    settings = settings or Settings()
    sessions = sessions if sessions is not None else SessionTable()
    notifier = ChangeNotifier()
    registry.store.on_change(notifier.notify_threadsafe)
    metrics = CoordinatorMetrics(registry)

    async def authenticate(request: Request, auth: str) -> NodeId | None:
        if auth == "none":
            return None
        if auth == "admin" and "authorization" not in request.headers and COOKIE in request.cookies:
            # the dashboard: a session cookie, and the CSRF header on every change
            check_csrf(request.method, cookie_session(sessions, request.cookies), request.headers)
            return None
        token = bearer(request)
        if auth == "admin":
            if not await run_in_threadpool(registry.is_admin, token):
                raise AuthError("admin token is not valid", code="invalid_credentials")
            return None
        return await run_in_threadpool(registry.authenticate_node, token)

    # --- node calls ---------------------------------------------------------------------------

    async def enroll(call: Call) -> EnrollResponse:
        req: EnrollRequest = call.body
        node_id, credential, netmap = await run_in_threadpool(registry.enroll, req)
        metrics.enrolled("ok")  # refusals are counted where errors are mapped (on_wgmesh_error)
        log.info("node enrolled", extra=kv(node=req.name, node_id=node_id, key=req.public_key[:8]))
        return EnrollResponse(node_id=node_id, credential=credential, netmap=netmap)

    async def get_netmap(call: Call) -> Response:
        assert call.node_id is not None
        since = _int_query(call.request, "since", -1)
        wait = min(max(_float_query(call.request, "wait", 0.0), 0.0), MAX_WAIT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            event = notifier.current()
            version = await run_in_threadpool(registry.version)
            # `!=` rather than `>`: after a database restore the version may have gone backwards.
            if version != since:
                netmap = await run_in_threadpool(registry.netmap, call.node_id)
                return json_response(netmap)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Response(status_code=304)
            with metrics.long_polls.track_inprogress():
                await notifier.wait(event, remaining)

    async def post_status(call: Call) -> StatusAck:
        assert call.node_id is not None
        address = client_address(call.request, settings.trusted_proxies)
        changed = await run_in_threadpool(registry.record_status, call.node_id, call.body, address)
        return StatusAck(version=await run_in_threadpool(registry.version), changed=changed)

    async def get_relay_grant(call: Call) -> RelayGrant:
        assert call.node_id is not None
        return await run_in_threadpool(registry.relay_grant, call.node_id, settings.relays)

    async def put_own_subnets(call: Call) -> RouteList:
        assert call.node_id is not None
        body: SubnetsUpdate = call.body
        return RouteList(routes=await run_in_threadpool(registry.set_own_subnets, call.node_id, body.subnets))

    # --- admin calls --------------------------------------------------------------------------

    async def get_network(call: Call) -> Network:
        return await run_in_threadpool(registry.network)

    async def patch_network(call: Call) -> Network:
        return await run_in_threadpool(registry.patch_network, call.body)

    async def create_token(call: Call) -> TokenCreated:
        created = await run_in_threadpool(registry.create_token, call.body)
        log.info("token created", extra=kv(token_id=created.id, reusable=created.reusable))
        return created

    async def list_tokens(call: Call) -> TokenList:
        return TokenList(tokens=await run_in_threadpool(registry.list_tokens))

    async def revoke_token(call: Call) -> TokenInfo:
        ref = call.param("token_id")
        if not (ref.isascii() and ref.isdigit()):
            raise ValidationError(f"token id {ref!r} is not a number", code="invalid_token_id")
        token_id = row_id(ref)
        if token_id is None:
            raise NotFoundError(f"token {ref} does not exist", code="unknown_token")
        return await run_in_threadpool(registry.revoke_token, token_id)

    async def list_nodes(call: Call) -> NodeList:
        return NodeList(nodes=await run_in_threadpool(registry.list_nodes))

    async def create_node(call: Call) -> Node:
        node, _ = await run_in_threadpool(registry.create_static_node, call.body)
        log.info("static node created", extra=kv(node=node.name, node_id=node.id))
        return node

    async def get_node(call: Call) -> Node:
        return await run_in_threadpool(registry.get_node, call.param("node"))

    async def patch_node(call: Call) -> Node:
        return await run_in_threadpool(registry.patch_node, call.param("node"), call.body)

    async def delete_node(call: Call) -> Node:
        node = await run_in_threadpool(registry.delete_node, call.param("node"))
        log.info("node deleted", extra=kv(node=node.name, node_id=node.id))
        return node

    async def get_node_status(call: Call) -> Response:
        found = await run_in_threadpool(registry.node_status, call.param("node"))
        if found is None:
            return error_response("no_status", f"node {call.param('node')!r} has not reported yet", 404)
        return json_response(found)

    async def list_statuses(call: Call) -> StatusList:
        found = await run_in_threadpool(registry.statuses)
        return StatusList(statuses=sorted(found.values(), key=lambda s: s.node))

    async def get_node_config(call: Call) -> Response:
        node, private_key = await run_in_threadpool(registry.node_private_key, call.param("node"))
        netmap = await run_in_threadpool(registry.netmap, node.id)
        log.info("static peer config exported", extra=kv(node=node.name, node_id=node.id))
        response = json_response(wg_quick_config(netmap, private_key))
        response.headers["cache-control"] = "no-store"  # it carries a private key
        return response

    async def list_routes(call: Call) -> RouteList:
        return RouteList(routes=await run_in_threadpool(registry.routes))

    async def list_pairs(call: Call) -> PairList:
        return PairList(pairs=await run_in_threadpool(registry.list_pairs))

    async def set_pair(call: Call) -> Response:
        body: PairSet = call.body
        if not body.model_fields_set:
            raise ValidationError("give p2p and/or rate (null clears)", code="empty_pair_update")
        changes = {name: getattr(body, name) for name in body.model_fields_set}
        result = await run_in_threadpool(registry.set_pair, call.param("a"), call.param("b"), changes)
        if result is None:
            return Response(status_code=204)
        return json_response(result)

    async def get_topology(call: Call) -> Topology:
        return await run_in_threadpool(registry.topology)

    # --- dashboard sessions and live events -----------------------------------------------------

    async def login(call: Call) -> Response:
        # JSON only: a cross-site HTML form cannot send it, so nobody can log a browser in behind its back
        if call.request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise ValidationError("log in with a JSON body", code="unsupported_media_type")
        body: SessionLogin = call.body
        if not await run_in_threadpool(registry.is_admin, body.token):
            log.warning(
                "dashboard login refused",
                extra=kv(client=client_address(call.request, settings.trusted_proxies)),
            )
            raise AuthError("admin token is not valid", code="invalid_credentials")
        session_id, session = sessions.create()
        response = json_response(_session_info(session.csrf, session.expires_at), 201)
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=int(sessions.ttl),
            path="/",
            httponly=True,
            samesite="strict",
            secure=call.request.url.scheme == "https",
        )
        response.headers["cache-control"] = "no-store"
        return response

    async def get_session(call: Call) -> Response:
        session = cookie_session(sessions, call.request.cookies)
        response = json_response(_session_info(session.csrf, session.expires_at))
        response.headers["cache-control"] = "no-store"
        return response

    async def logout(call: Call) -> Response:
        session_id = call.request.cookies.get(COOKIE)
        session = sessions.get(session_id)
        if session is not None:
            check_csrf(call.request.method, session, call.request.headers)
            sessions.delete(session_id)
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def events(call: Call) -> Response:
        session_id = call.request.cookies.get(COOKIE) if "authorization" not in call.request.headers else None

        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            fired = True
            while True:
                if session_id is not None and sessions.get(session_id) is None:
                    yield "event: logout\ndata: {}\n\n"
                    return
                event = notifier.current()
                version = await run_in_threadpool(registry.version)
                kind = "change" if fired else "heartbeat"
                yield f"event: {kind}\ndata: {json.dumps({'version': version})}\n\n"
                fired = await notifier.wait(event, HEARTBEAT)
                if fired:
                    await asyncio.sleep(EVENT_COALESCE)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def prometheus_targets(call: Call) -> Response:
        return JSONResponse(await run_in_threadpool(scrape_targets, registry))

    async def healthz(call: Call) -> Health:
        return Health(status="ok", version=await run_in_threadpool(registry.version))

    ops = [
        Operation("GET", "/healthz", healthz, "Liveness and registry version", "none", response=Health),
        Operation(
            "POST",
            "/api/v1/enroll",
            enroll,
            "Redeem an enrollment token for a node",
            "none",
            body=EnrollRequest,
            response=EnrollResponse,
            status=201,
        ),
        Operation(
            "GET",
            "/api/v1/netmap",
            get_netmap,
            "The node's netmap; long-polls for a change",
            "node",
            response=NetMap,
            query=(
                Query("since", "integer", "answer at once if the version is newer than this"),
                Query("wait", "number", "seconds to hold the request for a change (at most 60)"),
            ),
            extra_responses={304: "no change within `wait` seconds"},
        ),
        Operation(
            "POST",
            "/api/v1/status",
            post_status,
            "Report endpoints and peer state",
            "node",
            body=StatusReport,
            response=StatusAck,
        ),
        Operation(
            "PUT",
            "/api/v1/node/subnets",
            put_own_subnets,
            "Replace the node's advertised subnets",
            "node",
            body=SubnetsUpdate,
            response=RouteList,
        ),
        Operation(
            "GET",
            "/api/v1/node/relay",
            get_relay_grant,
            "The relays and a fresh relay ticket for the node",
            "node",
            response=RelayGrant,
        ),
        Operation("GET", "/api/v1/network", get_network, "The overlay network", "admin", response=Network),
        Operation(
            "PATCH",
            "/api/v1/network",
            patch_network,
            "Change network-wide settings",
            "admin",
            body=NetworkPatch,
            response=Network,
        ),
        Operation(
            "POST",
            "/api/v1/tokens",
            create_token,
            "Create an enrollment token",
            "admin",
            body=TokenCreate,
            response=TokenCreated,
            status=201,
        ),
        Operation(
            "GET", "/api/v1/tokens", list_tokens, "List enrollment tokens", "admin", response=TokenList
        ),
        Operation(
            "DELETE",
            "/api/v1/tokens/{token_id}",
            revoke_token,
            "Revoke an enrollment token",
            "admin",
            response=TokenInfo,
        ),
        Operation("GET", "/api/v1/nodes", list_nodes, "List nodes", "admin", response=NodeList),
        Operation(
            "POST",
            "/api/v1/nodes",
            create_node,
            "Create a static peer",
            "admin",
            body=NodeCreate,
            response=Node,
            status=201,
        ),
        Operation("GET", "/api/v1/nodes/{node}", get_node, "One node", "admin", response=Node),
        Operation(
            "PATCH",
            "/api/v1/nodes/{node}",
            patch_node,
            "Change a node",
            "admin",
            body=NodePatch,
            response=Node,
        ),
        Operation("DELETE", "/api/v1/nodes/{node}", delete_node, "Delete a node", "admin", response=Node),
        Operation(
            "GET",
            "/api/v1/nodes/{node}/status",
            get_node_status,
            "A node's last status report",
            "admin",
            response=NodeStatus,
        ),
        Operation(
            "GET",
            "/api/v1/nodes/{node}/config",
            get_node_config,
            "A static peer's wg-quick configuration, with its private key",
            "admin",
            response=WgQuickConfig,
        ),
        Operation(
            "GET",
            "/api/v1/statuses",
            list_statuses,
            "The last status report of every node",
            "admin",
            response=StatusList,
        ),
        Operation(
            "GET", "/api/v1/routes", list_routes, "Routes with their verdicts", "admin", response=RouteList
        ),
        Operation(
            "GET", "/api/v1/pairs", list_pairs, "P2P overrides per node pair", "admin", response=PairList
        ),
        Operation(
            "PUT",
            "/api/v1/pairs/{a}/{b}",
            set_pair,
            "Set or clear a pair's P2P override",
            "admin",
            body=PairSet,
            response=PairPolicy,
            extra_responses={204: "override cleared"},
        ),
        Operation(
            "GET",
            "/api/v1/topology",
            get_topology,
            "Nodes, links, routes and warnings",
            "admin",
            response=Topology,
        ),
        Operation(
            "POST",
            "/api/v1/session",
            login,
            "Dashboard login: exchange the admin token for an HttpOnly session cookie",
            "none",
            body=SessionLogin,
            response=SessionInfo,
            status=201,
        ),
        Operation(
            "GET",
            "/api/v1/session",
            get_session,
            "The session of the cookie, with its CSRF token",
            "none",
            response=SessionInfo,
        ),
        Operation(
            "DELETE",
            "/api/v1/session",
            logout,
            "Dashboard logout (needs the X-CSRF-Token header)",
            "none",
            extra_responses={204: "logged out"},
        ),
        Operation(
            "GET",
            "/api/v1/events",
            events,
            "Server-sent events: `change` with the registry version after writes, `heartbeat` every 15 s",
            "admin",
        ),
        Operation(
            "GET",
            "/api/v1/prometheus/targets",
            prometheus_targets,
            "Prometheus HTTP service discovery: every agent's metrics address with node labels",
            "admin",
        ),
    ]
    document = openapi_document(ops, title="wgmesh coordinator", version=__version__)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def metrics_text(request: Request) -> Response:
        # No auth, like /healthz: firewall it like the API (docs/metrics.md).
        metrics.refresh()  # on the loop: the embedded relay's connections
        body = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def on_wgmesh_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, WgmeshError)
        if request.url.path == "/api/v1/enroll":
            metrics.enrolled(exc.code)
        if exc.status >= 500:
            log.error("request failed", extra=kv(path=request.url.path, code=exc.code, error=exc.message))
        return error_response(exc.code, exc.message, exc.status)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(code, str(exc.detail), exc.status_code)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra=kv(path=request.url.path))
        return error_response("internal", "internal error; see the coordinator log", 500)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        notifier.bind(asyncio.get_running_loop())
        yield

    async def dashboard(request: Request) -> Response:
        name = request.path_params.get("name")
        if name is None:
            name = "index.html"
        elif not ASSET.fullmatch(name):
            raise NotFoundError(f"no dashboard file {name!r}")
        path = web_root() / name
        if not path.is_file():
            raise NotFoundError(f"dashboard file {name!r} is not installed (see WGMESH_WEB_DIR)")
        return FileResponse(path, headers=DASHBOARD_HEADERS)

    routes = [to_route(op, authenticate) for op in ops]
    routes.append(Route("/api/v1/openapi.json", openapi, methods=["GET"]))
    routes.append(Route("/metrics", metrics_text, methods=["GET"]))
    routes.append(Route("/", dashboard, methods=["GET"]))
    routes.append(Route("/assets/{name}", dashboard, methods=["GET"]))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            WgmeshError: on_wgmesh_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
    app.state.registry = registry
    app.state.notifier = notifier
    app.state.sessions = sessions
    app.state.metrics = metrics
    app.add_middleware(BodyLimit)
    app.add_middleware(RequestMetrics, metrics=metrics, routes=routes)
    return app


def _session_info(csrf: str, expires_at: float) -> SessionInfo:
    return SessionInfo(csrf_token=csrf, expires_at=datetime.fromtimestamp(expires_at, UTC))


def _int_query(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValidationError(f"query parameter {name!r} must be an integer", code="invalid_query") from exc


def _float_query(request: Request, name: str, default: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValidationError(f"query parameter {name!r} must be a number", code="invalid_query") from exc
    if not math.isfinite(value):
        raise ValidationError(f"query parameter {name!r} must be a finite number", code="invalid_query")
    return value
