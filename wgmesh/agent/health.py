"""Pure: whether a peer is alive, the agent's one per-peer health signal (issue 18).

It is read from the probes path choice already sends (agent/path_control.py), on whichever path they go:
a probe the peer answered, direct or through a relay, proves its agent runs and reaches us. HA groups
(agent/ha.py) move a prefix on it; `wgmesh status` shows it for every peer.

A peer is `down` once `misses` probes in a row went unanswered *and* `dead_after` seconds passed since it
last answered (or since the agent started watching it): the count keeps a peer probed seldom (an idle one,
every 5 s) from being called dead between two probes, the time keeps one probed often from being called
dead on three quick losses. HA members are probed every 0.5 s, so a dead one is `down` after 2.5 s.
"""

from __future__ import annotations

from dataclasses import dataclass

from wgmesh.values import Liveness

DEAD_AFTER = 2.5
"""Seconds without an answer before a peer can be down: five probe intervals of an HA member, so one or
two probes lost to a busy link never move a prefix."""
MISSES = 3
"""Unanswered probes in a row before a peer can be down (the same three path choice fails a path on)."""


@dataclass(frozen=True, slots=True)
class HealthConfig:
    dead_after: float = DEAD_AFTER
    misses: int = MISSES


DEFAULT_HEALTH = HealthConfig()


@dataclass(frozen=True, slots=True)
class PeerHealth:
    """A peer's health and since when (the agent's monotonic clock) it has been so."""

    state: Liveness
    since: float

    def held_for(self, now: float) -> float:
        """How long the peer has been in this state."""
        return now - self.since


def observe(
    previous: PeerHealth | None,
    *,
    now: float,
    last_answer: float | None,
    misses: int,
    watched_since: float,
    config: HealthConfig = DEFAULT_HEALTH,
) -> PeerHealth:
    """The peer's health now, from its last answered probe, the unanswered ones since, and when the agent
    started probing it; `since` carries over while the state holds."""
    silent_since = last_answer if last_answer is not None else watched_since
    state: Liveness
    if misses >= config.misses and now - silent_since >= config.dead_after:
        state = "down"
    elif last_answer is not None:
        state = "up"
    else:
        state = "unknown"
    if previous is not None and previous.state == state:
        return previous
    return PeerHealth(state, now)


def own_health(previous: PeerHealth | None, peers: list[PeerHealth], now: float) -> PeerHealth:
    """A gateway's own health as an HA member: `up` while some peer answers it, `down` once every peer is
    down (cut off: it must claim nothing), `unknown` before any answer; `up` with no peer at all."""
    states = {h.state for h in peers}
    state: Liveness
    if not peers or "up" in states:
        state = "up"
    elif states == {"down"}:
        state = "down"
    else:
        state = "unknown"
    if previous is not None and previous.state == state:
        return previous
    return PeerHealth(state, now)
