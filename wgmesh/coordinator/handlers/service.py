"""Unauthenticated service endpoints: liveness, the OpenAPI document and the Prometheus scrape (the latter
on its own listener, app.create_metrics_app)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wgmesh.coordinator.handlers.context import context
from wgmesh.coordinator.operations import Call, json_response
from wgmesh.coordinator.store import UNAVAILABLE
from wgmesh.errors import StoreError
from wgmesh.models import Health


async def healthz(call: Call) -> Health | Response:
    registry = context(call.request).registry
    try:
        return Health(status="ok", version=await run_in_threadpool(registry.version))
    except StoreError as exc:
        if exc.code != UNAVAILABLE:
            raise
        held = registry.held_version()
        return json_response(Health(status="degraded", version=held or 0, database="unavailable"), status=503)


async def openapi(request: Request) -> Response:
    return JSONResponse(context(request).openapi)


async def metrics_text(request: Request) -> Response:
    metrics = context(request).metrics
    # No auth: it is served on its own listener, loopback by default (--metrics-listen, docs/metrics.md).
    metrics.refresh()  # on the loop: the embedded relay's connections
    body = await run_in_threadpool(generate_latest, metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
