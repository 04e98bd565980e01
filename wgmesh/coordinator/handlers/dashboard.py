"""The dashboard: session login and logout, the live event stream, and its static files."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from wgmesh.coordinator.handlers.auth import actor_of, client_address, request_scheme, set_actor
from wgmesh.coordinator.handlers.context import Context, context
from wgmesh.coordinator.operations import Call, json_response
from wgmesh.coordinator.sessions import COOKIE, check_csrf, cookie_session
from wgmesh.errors import AuthError, NotFoundError, ValidationError
from wgmesh.logs import kv
from wgmesh.models import SessionInfo, SessionLogin

log = logging.getLogger("wgmesh.coordinator")

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
    """The dashboard's files: $WGMESH_WEB_DIR, else the package's own `wgmesh/web/` (installed with it)."""
    configured = os.environ.get("WGMESH_WEB_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "web"


async def login(call: Call) -> Response:
    ctx = context(call.request)
    registry, settings, sessions = ctx.registry, ctx.settings, ctx.sessions
    # JSON only: a cross-site HTML form cannot send it, so nobody can log a browser in behind its back
    if call.request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ValidationError("log in with a JSON body", code="unsupported_media_type")
    body: SessionLogin = call.body
    identity = await run_in_threadpool(registry.admin_tokens.identify, body.token)
    if identity is None:
        log.warning(
            "dashboard login refused",
            extra=kv(client=client_address(call.request, settings.trusted_proxies)),
        )
        raise AuthError("admin token is not valid", code="invalid_credentials")
    set_actor(call.request, identity, session=False)
    session_id, session = await run_in_threadpool(sessions.create, identity.token_id)
    response = json_response(_session_info(session.csrf, session.expires_at), 201)
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(sessions.ttl),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request_scheme(call.request, settings.trusted_proxies, settings.forwarded_proto) == "https",
    )
    response.headers["cache-control"] = "no-store"
    return response


async def get_session(call: Call) -> Response:
    ctx = context(call.request)
    session = await run_in_threadpool(cookie_session, ctx.sessions, call.request.cookies)
    if not await _session_live(ctx, call.request.cookies.get(COOKIE, "")):
        raise AuthError("the admin token of this session was revoked", code="invalid_session")
    response = json_response(_session_info(session.csrf, session.expires_at))
    response.headers["cache-control"] = "no-store"
    return response


async def logout(call: Call) -> Response:
    ctx = context(call.request)
    sessions = ctx.sessions
    session_id = call.request.cookies.get(COOKIE)
    session = await run_in_threadpool(sessions.get, session_id)
    if session is not None:
        check_csrf(call.request.method, session, call.request.headers)
        await run_in_threadpool(sessions.delete, session_id)
        identity = await run_in_threadpool(ctx.registry.admin_tokens.live, session.token_id)
        if identity is not None:
            set_actor(call.request, identity, session=True)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def events(call: Call) -> Response:
    ctx = context(call.request)
    registry, notifier = ctx.registry, ctx.notifier
    session_id = call.request.cookies.get(COOKIE) if "authorization" not in call.request.headers else None
    actor = actor_of(call.request)
    token_id = actor.identity.token_id if actor is not None else None

    async def live() -> bool:
        # A revocation ends a stream at its next change or heartbeat, whether a session or a bearer
        # token opened it (maybe revoked through another coordinator of the registry).
        if session_id is not None:
            return await _session_live(ctx, session_id)
        if token_id is not None:
            return await run_in_threadpool(ctx.registry.admin_tokens.live, token_id) is not None
        return True

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        fired = True
        while True:
            if not await live():
                yield "event: logout\ndata: {}\n\n"
                return
            event = notifier.current()
            version = await run_in_threadpool(registry.version)
            kind = "change" if fired else "heartbeat"
            yield f"event: {kind}\ndata: {json.dumps({'version': version})}\n\n"
            fired = await notifier.wait(event, HEARTBEAT)
            if notifier.stopping:
                return  # the browser reconnects (retry), to this coordinator once back or another
            if fired:
                await asyncio.sleep(EVENT_COALESCE)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


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


async def _session_live(ctx: Context, session_id: str) -> bool:
    """Whether a session is live: in the table, and its admin token not revoked (maybe by another
    coordinator of the registry)."""
    session = await run_in_threadpool(ctx.sessions.get, session_id)
    if session is None:
        return False
    return await run_in_threadpool(ctx.registry.admin_tokens.live, session.token_id) is not None


def _session_info(csrf: str, expires_at: float) -> SessionInfo:
    return SessionInfo(csrf_token=csrf, expires_at=datetime.fromtimestamp(expires_at, UTC))
