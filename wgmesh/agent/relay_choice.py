"""Which relay an agent sends its relayed datagrams through (its *home*): a pure rule over the links' state.

An agent holds a connection to every relay announced and takes datagrams from any of them; it sends
through one. It keeps that one while it is up, and moves only when another is clearly nearer: RTT
samples jitter by a fraction of a millisecond, and a move on every sample would shift every relayed
peer's traffic from one relay to the other and back (each move is harmless, WireGuard roams; but the
relays' counters, the status, and a stream's packet order all churn). Each relay's RTT is the lowest of
its last SAMPLES pings, so one late pong (a busy event loop, a queue for a moment) moves nothing, while a
relay that really is nearer is seen as such from its first samples. With no home, or its connection down,
the nearest up relay is taken at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SAMPLES = 4
"""Pings a relay's RTT is the minimum of: 8 s at the shim's 2 s ping interval."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One relay connection: its id (the grant's), whether it answered hello, its RTT (s): the lowest of its
    last SAMPLES pings, None before the first."""

    id: str
    up: bool
    rtt: float | None


@dataclass(frozen=True, slots=True)
class RelayChoiceConfig:
    """How much nearer another relay must be before the home moves."""

    margin_ratio: float = 0.3
    """Another relay's RTT must be below the home's by this share of the home's RTT…"""
    margin_s: float = 0.005
    """…and by at least this many seconds (5 ms: well above the jitter of a healthy path)."""


DEFAULT = RelayChoiceConfig()


def _rtt(candidate: Candidate) -> float:
    # A connection without a sample yet (just up) ranks after every measured one.
    return candidate.rtt if candidate.rtt is not None else float("inf")


def choose(
    home: str | None, candidates: Sequence[Candidate], config: RelayChoiceConfig = DEFAULT
) -> str | None:
    """The relay to send through: `home` while it is up and no other is clearly nearer, else the nearest up
    one (the grant's order breaks ties); None when none is up."""
    up = [c for c in candidates if c.up]
    if not up:
        return None
    nearest = min(up, key=_rtt)  # min keeps the first of equals: the grant's order
    current = next((c for c in up if c.id == home), None)
    if current is None:
        return nearest.id
    if current.rtt is None or nearest.rtt is None or nearest.id == current.id:
        return current.id
    gain = current.rtt - nearest.rtt
    if gain >= config.margin_s and gain >= config.margin_ratio * current.rtt:
        return nearest.id
    return current.id
