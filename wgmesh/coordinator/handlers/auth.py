"""Who is calling: the bearer credential or dashboard session of a request, and its client address."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from wgmesh.coordinator.handlers.context import context
from wgmesh.coordinator.operations import Auth
from wgmesh.coordinator.sessions import COOKIE, check_csrf, cookie_session
from wgmesh.errors import AuthError
from wgmesh.values import NodeId, Prefix


async def authenticate(request: Request, auth: Auth) -> NodeId | None:
    """Check the credentials `auth` asks for; the node id for node calls, else None."""
    ctx = context(request)
    registry, sessions = ctx.registry, ctx.sessions
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


def request_scheme(request: Request, trusted: Sequence[Prefix], forwarded_proto: bool) -> str:
    """`https` or `http` as the client spoke it: behind a trusted TLS-terminating proxy (`--insecure-http`),
    the proxy's X-Forwarded-Proto; otherwise this connection's own scheme."""
    peer = request.client.host if request.client else None
    if forwarded_proto and peer is not None and any(ipaddress.ip_address(peer) in net for net in trusted):
        said = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        if said in ("http", "https"):
            return said
    return request.url.scheme


def bearer(request: Request) -> str:
    """The bearer token of a request, or AuthError."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing bearer token (Authorization: Bearer …)", code="missing_credentials")
    return token.strip()
