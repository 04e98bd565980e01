"""Who is calling: the bearer credential or dashboard session of a request, and its client address."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from wgmesh.coordinator.admin_tokens import AdminIdentity
from wgmesh.coordinator.handlers.context import context
from wgmesh.coordinator.operations import Auth
from wgmesh.coordinator.sessions import COOKIE, check_csrf, cookie_session
from wgmesh.errors import AuthError, ForbiddenError
from wgmesh.pins import Pin
from wgmesh.relay.revocation import verify_relay_token
from wgmesh.values import NodeId, Prefix


async def authenticate(request: Request, auth: Auth) -> NodeId | None:
    """Check the credentials `auth` asks for; the node id for node calls, else None. An admin call's
    identity is remembered for its audit entry (set_actor)."""
    ctx = context(request)
    registry, sessions = ctx.registry, ctx.sessions
    if auth == "none":
        return None
    if auth == "node":
        presented = bearer(request)
        # Most of an agent's calls are vouched for from memory, here on the loop: a thread hop costs a
        # wait behind whatever the pool has queued (a thousand long-polls woken by a change).
        held = registry.authenticate_held(presented)
        return held if held is not None else await run_in_threadpool(registry.authenticate_node, presented)
    if auth == "relay":
        # Only relays announced with a pin: the pin is what ties the signing key to the relay's id.
        pins = {r.id: Pin.parse(r.pin) for r in ctx.settings.relays if r.pin is not None}
        verify_relay_token(bearer(request), time.time(), pins)
        return None
    if "authorization" not in request.headers and COOKIE in request.cookies:
        # the dashboard: a session cookie, and the CSRF header on every change
        session = await run_in_threadpool(cookie_session, sessions, request.cookies)
        check_csrf(request.method, session, request.headers)
        identity = await run_in_threadpool(registry.admin_tokens.live, session.token_id)
        if identity is None:  # its token was revoked, maybe through another coordinator
            await run_in_threadpool(sessions.drop_token, session.token_id)
            raise AuthError("the admin token of this session was revoked", code="invalid_session")
        set_actor(request, identity, session=True)
    else:
        identity = await run_in_threadpool(registry.admin_tokens.identify, bearer(request))
        if identity is None:
            raise AuthError("admin token is not valid", code="invalid_credentials")
        set_actor(request, identity, session=False)
    if auth == "admin" and identity.read_only:
        raise ForbiddenError(
            f"admin token {identity.name!r} is read-only: it cannot change anything", code="read_only"
        )
    return None


@dataclass(frozen=True)
class Actor:
    """The admin behind a request, as the audit log names it."""

    identity: AdminIdentity
    session: bool

    @property
    def label(self) -> str:
        """The token's name, or `session:NAME` for a dashboard session opened with it."""
        return f"session:{self.identity.name}" if self.session else self.identity.name


def set_actor(request: Request, identity: AdminIdentity, *, session: bool) -> None:
    """Remember who the admin behind `request` is (authenticate, or the dashboard's login and logout)."""
    request.state.wgmesh_actor = Actor(identity, session)


def actor_of(request: Request) -> Actor | None:
    """The admin set_actor remembered for `request`, or None."""
    found = getattr(request.state, "wgmesh_actor", None)
    return found if isinstance(found, Actor) else None


def client_address(request: Request, trusted: Sequence[Prefix]) -> str | None:
    """The address a request came from; X-Forwarded-For counts only behind a trusted proxy."""
    host = request.client.host if request.client else None
    if host is None:
        return None
    try:
        hop = _canonical(ipaddress.ip_address(host))
    except ValueError:
        return host  # not an address (a unix socket's name): nothing to normalise or trust
    peer = str(hop)
    if not trusted or not any(hop in net for net in trusted):
        return peer
    chain = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for candidate in reversed(chain):
        try:
            addr = _canonical(ipaddress.ip_address(candidate))
        except ValueError:
            return peer
        if not any(addr in net for net in trusted):
            return str(addr)
    return peer


def _canonical(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4 client of a dual-stack listener (`[::]`) arrives as `::ffff:a.b.c.d`: it is a.b.c.d, as
    the node's stored public IP is compared with it on every report and heartbeat."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address


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
