"""The rate limits' hook: an ASGI middleware that charges enrollments, logins and 401 answers to the
request's source address (`client_address`, so `--trusted-proxy` is honoured) and answers 429 with
`Retry-After` when that address has spent its budget. The arithmetic is wgmesh.coordinator.ratelimit's."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wgmesh.coordinator.handlers.auth import client_address
from wgmesh.coordinator.operations import error_response
from wgmesh.coordinator.ratelimit import RateLimits, TokenBuckets
from wgmesh.errors import RateLimitedError
from wgmesh.logs import kv
from wgmesh.values import Prefix

log = logging.getLogger("wgmesh.coordinator")

LIMITED = {("POST", "/api/v1/enroll"): "enroll", ("POST", "/api/v1/session"): "login"}
"""The requests a limit of their own applies to, besides the failures every API request is checked against."""
WHAT = {"enroll": "enrollments", "login": "logins", "failures": "failed credentials"}


class RateLimit:
    """Answers 429 to an address over its limits; every other request passes untouched."""

    def __init__(self, app: ASGIApp, *, limits: RateLimits, trusted: Sequence[Prefix]) -> None:
        self.app = app
        self.trusted = trusted
        self.buckets = {kind: TokenBuckets(getattr(limits, kind)) for kind in RateLimits.KINDS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The dashboard's files and /healthz cost nothing and carry no credential: never limited.
        address = (
            client_address(Request(scope), self.trusted)
            if scope["type"] == "http" and scope["path"].startswith("/api/")
            else None
        )
        if address is None:
            await self.app(scope, receive, send)
            return
        kind = "failures"
        wait = self.buckets[kind].wait(address)
        if wait == 0.0 and (scope["method"], scope["path"]) in LIMITED:
            kind = LIMITED[scope["method"], scope["path"]]
            wait = self.buckets[kind].take(address)
            if wait == 0.0:
                self._note_spent(kind, address)
        if wait > 0.0:
            seconds = max(1, math.ceil(wait))
            refused = RateLimitedError(f"too many {WHAT[kind]} from {address}: try again in {seconds} s")
            response = error_response(refused.code, refused.message, refused.status)
            response.headers["retry-after"] = str(seconds)
            await response(scope, receive, send)
            return

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.buckets["failures"].spend(address)
                self._note_spent("failures", address)
            await send(message)

        await self.app(scope, receive, watched)

    def _note_spent(self, kind: str, address: str) -> None:
        # Logged when the last token goes: at most one line per refill, however hard an address pushes.
        if self.buckets[kind].wait(address) > 0.0:
            log.warning("rate limit reached", extra=kv(limit=kind, client=address))
