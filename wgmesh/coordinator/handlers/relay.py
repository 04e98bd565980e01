"""Relay-facing calls: the revocation list a relay pulls (authenticated as an announced relay)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from wgmesh.coordinator.handlers.context import context
from wgmesh.coordinator.operations import Call
from wgmesh.models import RevocationList


async def get_revocations(call: Call) -> RevocationList:
    registry = context(call.request).registry
    return RevocationList(revoked=await run_in_threadpool(registry.relay_revocations))
