"""Agent-facing calls: enrollment, the long-polled netmap, status reports, relay grants, own subnets."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from wgmesh import versions
from wgmesh.coordinator.handlers.auth import client_address
from wgmesh.coordinator.handlers.context import context
from wgmesh.coordinator.operations import Call, compressed_json
from wgmesh.coordinator.store import VERSION_TRUST
from wgmesh.errors import ValidationError
from wgmesh.logs import kv
from wgmesh.models import (
    EnrollRequest,
    EnrollResponse,
    HeartbeatAck,
    KeyRotated,
    KeyRotation,
    Model,
    RelayGrant,
    RouteList,
    StatusReport,
    SubnetsUpdate,
)
from wgmesh.netmap import RegistrySnapshot, build_netmap
from wgmesh.values import NodeId

log = logging.getLogger("wgmesh.coordinator")

MAX_WAIT = 60.0
VERSION_AGE_HEADER = "Wgmesh-Version-Age"
"""Seconds from the commit of the answered version (as this coordinator heard of it) to the answer: how
long a change took to reach the agent, from the server's side."""


class StatusAck(Model):
    """The answer to a status report."""

    version: int
    changed: bool


async def enroll(call: Call) -> EnrollResponse:
    ctx = context(call.request)
    registry, metrics = ctx.registry, ctx.metrics
    req: EnrollRequest = call.body
    node_id, credential, netmap = await run_in_threadpool(registry.enroll, req)
    metrics.enrolled("ok")  # refusals are counted where errors are mapped (on_wgmesh_error)
    log.info("node enrolled", extra=kv(node=req.name, node_id=node_id, key=req.public_key[:8]))
    return EnrollResponse(node_id=node_id, credential=credential, netmap=netmap)


async def rotate_own_key(call: Call) -> KeyRotated:
    registry = context(call.request).registry
    assert call.node_id is not None
    body: KeyRotation = call.body
    credential, netmap = await run_in_threadpool(registry.rotate_key, call.node_id, body.public_key)
    log.info("node key rotated", extra=kv(node=netmap.name, node_id=call.node_id, key=body.public_key[:8]))
    return KeyRotated(credential=credential, netmap=netmap)


async def get_netmap(call: Call) -> Response:
    """The whole netmap when the version moved from `since` (the API of agents before netmap changes)."""
    return await _long_poll(call, lambda snapshot, node_id, _since: build_netmap(snapshot, node_id))


async def get_netmap_changes(call: Call) -> Response:
    """The netmap as the change from the version the agent holds (`since`), whole when that one is gone."""
    registry = context(call.request).registry
    return await _long_poll(call, registry.netmap_change, registry.cheap_change)


async def _long_poll(
    call: Call,
    render: Callable[[RegistrySnapshot, NodeId, int], Model],
    cheap: Callable[[RegistrySnapshot, NodeId, int], Model | None] | None = None,
) -> Response:
    """Answer `render(snapshot, node, since)` as soon as the registry's version differs from `since`,
    waiting up to `wait` seconds for it; 304 when it did not move. `cheap(snapshot, node, since)` is the
    answer when it can be made on the event loop (a change of a few peers, its diff made), else None: a
    worker thread's hop costs more than such an answer, a thousand times over when a change wakes every
    agent."""
    ctx = context(call.request)
    registry, metrics, notifier, pacer = ctx.registry, ctx.metrics, ctx.notifier, ctx.pacer
    node_id = call.node_id
    assert node_id is not None
    since = _int_query(call.request, "since", -1)
    wait = min(max(_float_query(call.request, "wait", 0.0), 0.0), MAX_WAIT)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        event = notifier.current()
        # The snapshot, not the database's version alone: without its database the coordinator answers
        # from the one it holds (registry.snapshot).
        # The one held when its version is the one known (no database, no thread), else on a thread.
        snapshot = registry.snapshot_held(VERSION_TRUST)
        if snapshot is None:
            snapshot = await call.run(registry.snapshot, VERSION_TRUST)
        # `!=` rather than `>`: after a database restore the version may have gone backwards.
        if snapshot.version != since:
            # Paced in a burst of versions (coordinator/pacing.py): held back, the answer takes every
            # version committed meanwhile. Never past the request's deadline, never while stopping.
            due = pacer.delay(node_id, loop.time(), notifier.waiters, notifier.committed_within)
            hold = min(due, deadline - loop.time())
            if hold > 0 and not notifier.stopping:
                await notifier.hold(hold)
                continue
            pacer.answered(node_id, loop.time(), notifier.waiters)
            made = cheap(snapshot, node_id, since) if cheap is not None else None
            if made is not None:
                response = compressed_json(call.request, made)
            else:
                # A whole netmap, or the first change of a version (its diff): milliseconds at 1,000
                # peers, on a worker thread while the event loop serves every other long-poll.
                response = await call.run(_answer, call.request, render, snapshot, node_id, since)
            age = notifier.age(snapshot.version)
            if age is not None:
                response.headers[VERSION_AGE_HEADER] = f"{age:.4f}"
                metrics.netmap_delivery.observe(age)
            return response
        remaining = deadline - loop.time()
        # A stopping coordinator answers "nothing new" at once: the agent asks again, finds it gone and
        # moves on, instead of waiting out the stop's grace period on a poll that would never answer.
        if remaining <= 0 or notifier.stopping:
            return Response(status_code=304)
        with metrics.long_polls.track_inprogress():
            await notifier.wait(event, remaining)


async def post_status(call: Call) -> StatusAck:
    ctx = context(call.request)
    registry, settings = ctx.registry, ctx.settings
    assert call.node_id is not None
    address = client_address(call.request, settings.trusted_proxies)
    report: StatusReport = call.body
    if report.agent_version is None:
        # Agents name their version in the User-Agent (wgmesh/versions.py says why not in the body).
        said = versions.from_user_agent(call.request.headers.get("user-agent"))
        if said is not None:
            report = report.model_copy(update={"agent_version": said})
    # On the reports' lane (operations.REPORTS), not behind the long-polls a change wakes.
    changed = await call.run(registry.record_status, call.node_id, report, address)
    return StatusAck(version=await call.run(registry.version, VERSION_TRUST), changed=changed)


async def post_heartbeat(call: Call) -> HeartbeatAck:
    ctx = context(call.request)
    registry, settings = ctx.registry, ctx.settings
    assert call.node_id is not None
    address = client_address(call.request, settings.trusted_proxies)
    wanted = await run_in_threadpool(registry.record_heartbeat, call.node_id, address)
    version = await run_in_threadpool(registry.version, VERSION_TRUST)
    return HeartbeatAck(version=version, report_wanted=wanted)


async def get_relay_grant(call: Call) -> RelayGrant:
    ctx = context(call.request)
    registry, settings = ctx.registry, ctx.settings
    assert call.node_id is not None
    return await run_in_threadpool(registry.relay_grant, call.node_id, settings.relays)


async def put_own_subnets(call: Call) -> RouteList:
    registry = context(call.request).registry
    assert call.node_id is not None
    body: SubnetsUpdate = call.body
    aliases = {a.prefix: a.alias for a in body.aliases}
    if len(aliases) != len(body.aliases):
        raise ValidationError("a prefix is given two aliases", code="invalid_alias")
    routes = await run_in_threadpool(registry.set_own_subnets, call.node_id, body.subnets, body.site, aliases)
    return RouteList(routes=routes)


def _answer(
    request: Request,
    render: Callable[[RegistrySnapshot, NodeId, int], Model],
    snapshot: RegistrySnapshot,
    node_id: NodeId,
    since: int,
) -> Response:
    return compressed_json(request, render(snapshot, node_id, since))


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
