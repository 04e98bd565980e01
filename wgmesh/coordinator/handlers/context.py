"""What the handlers share: set up once by `create_app`, read from the request's application."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from wgmesh.coordinator.changes import ChangeNotifier
from wgmesh.coordinator.metrics import CoordinatorMetrics
from wgmesh.coordinator.pacing import Pacer
from wgmesh.coordinator.ratelimit import RateLimits
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.sessions import SessionTable
from wgmesh.models import RelayInfo
from wgmesh.pins import Pin
from wgmesh.values import Prefix


@dataclass
class Settings:
    """How the API is exposed."""

    trusted_proxies: Sequence[Prefix] = field(default_factory=list)
    relays: Sequence[RelayInfo] = field(default_factory=list)
    """Relays announced to agents with their tickets (`--announce-relay`, `--relay`)."""
    limits: RateLimits = field(default_factory=RateLimits)
    """Per-address limits on enrollments, logins and failed credentials (`--rate-limit`)."""
    pin: Pin | None = None
    """What clients pin (coordinator/identity.py); enrollment tokens carry it. None: tokens are bare."""
    public_urls: Sequence[str] = field(default_factory=list)
    """The URLs tokens name (`--public-url`); none: the URL the token's request came to."""
    forwarded_proto: bool = False
    """Plain HTTP behind a TLS-terminating proxy: X-Forwarded-Proto from a trusted proxy is the scheme."""


@dataclass(frozen=True)
class Context:
    """One application's registry, settings, sessions, long-poll wake-ups and their pacing, metrics and
    OpenAPI document."""

    registry: Registry
    settings: Settings
    sessions: SessionTable
    notifier: ChangeNotifier
    metrics: CoordinatorMetrics
    openapi: dict[str, Any]
    pacer: Pacer = field(default_factory=Pacer)


def context(request: Request) -> Context:
    """The context of the application serving `request` (`app.state.context`)."""
    found = request.app.state.context
    # app.state is untyped: check once here, so every handler gets a typed context
    assert isinstance(found, Context)
    return found
