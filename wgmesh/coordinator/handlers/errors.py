"""Exceptions mapped to the one error shape (`{"error": {code, message}}`) in one place."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from wgmesh.coordinator.handlers.context import context
from wgmesh.coordinator.operations import error_response
from wgmesh.coordinator.store import RETRY_AFTER, UNAVAILABLE
from wgmesh.errors import WgmeshError
from wgmesh.logs import kv

log = logging.getLogger("wgmesh.coordinator")


async def on_wgmesh_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WgmeshError)
    if request.url.path == "/api/v1/enroll":
        context(request).metrics.enrolled(exc.code)
    if exc.code == UNAVAILABLE:
        # The store logged the loss once; a line per refused request would bury it.
        response = error_response(exc.code, exc.message, exc.status)
        response.headers["retry-after"] = str(RETRY_AFTER)
        return response
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
