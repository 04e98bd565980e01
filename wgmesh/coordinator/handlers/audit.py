"""The audit log over the API: recording each admin change (operations.to_route calls `record`) and
reading the log back."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from wgmesh.coordinator.audit import MAX_LIMIT, detail_of
from wgmesh.coordinator.handlers.auth import actor_of, client_address
from wgmesh.coordinator.handlers.context import context
from wgmesh.coordinator.operations import Call, Operation
from wgmesh.errors import ValidationError
from wgmesh.models import AuditList


def _target(call: Call, result: BaseModel | Response) -> str:
    """What the change was made to: the path's parameters, else the name or id it created."""
    params = [str(v) for v in call.request.path_params.values()]
    if params:
        return "/".join(params)
    for source in (call.body, result):
        for attr in ("name", "id"):
            value = getattr(source, attr, None)
            if isinstance(value, str | int) and not isinstance(value, bool):
                return str(value)
    return ""


async def record(op: Operation, call: Call, result: BaseModel | Response) -> None:
    """One audit entry for a successful call of `op`; nothing for a refused one or without an admin."""
    status = result.status_code if isinstance(result, Response) else op.status
    actor = actor_of(call.request)
    if op.audit is None or status >= 400 or actor is None:
        return
    ctx = context(call.request)
    await run_in_threadpool(
        lambda: ctx.registry.audit.record(
            actor=actor.label,
            action=op.audit or "",
            target=_target(call, result),
            detail=detail_of(call.body),
            client=client_address(call.request, ctx.settings.trusted_proxies),
        )
    )


async def list_audit(call: Call) -> AuditList:
    registry = context(call.request).registry
    query = call.request.query_params
    since: datetime | None = None
    if "since" in query:
        try:
            since = datetime.fromisoformat(query["since"])
        except ValueError:
            raise ValidationError(
                f"since {query['since']!r} is not an ISO 8601 time", code="invalid_since"
            ) from None
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    limit = 100
    if "limit" in query:
        text = query["limit"]
        if not (text.isascii() and text.isdigit() and len(text) <= 4) or not 1 <= int(text) <= MAX_LIMIT:
            raise ValidationError(f"limit must be a number from 1 to {MAX_LIMIT}", code="invalid_limit")
        limit = int(text)
    entries = await run_in_threadpool(lambda: registry.audit.entries(since=since, limit=limit))
    return AuditList(entries=list(entries))
