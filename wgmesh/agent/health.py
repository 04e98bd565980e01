"""Pure: whether a peer is alive, the agent's one per-peer health signal (issue 18).

It is read from the probes path choice already sends (agent/path_control.py), on whichever path they go:
a probe the peer answered, direct or through a relay, proves its agent runs and reaches us. HA groups
(agent/ha.py) move a prefix on it; `wgmesh status` shows it for every peer.

A peer is `down` once at least `misses` probes went unanswered since it last answered *and* `dead_after`
seconds passed since then (or since the agent started watching it): the count keeps a peer probed seldom (an
idle one, every 5 s) from being called dead between two probes, the time keeps one probed often from being
called dead on a few quick losses. Probes count one by one: a round to two endpoints and the relay that
goes unanswered is three. HA members are probed every 0.5 s on every path, so a dead one is `down` after
2.5 s, which is the rule that decides for them.
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
    return _carried(previous, state, now)


def _carried(previous: PeerHealth | None, state: Liveness, now: float) -> PeerHealth:
    """`previous` while the state holds (its `since` with it), else the new state from `now`."""
    if previous is not None and previous.state == state:
        return previous
    return PeerHealth(state, now)


OWN_FRESH = 1.5
"""A gateway counts itself up as an HA member only while some peer it watches answered this recently
(watched peers are probed every 0.5 s): cut off, it knows within 1.5 s, before any member it watches can be
called down (2.5 s), so it never claims a prefix on the way to being isolated."""


def own_health(
    previous: PeerHealth | None, answer_ages: list[float | None], now: float, fresh: float = OWN_FRESH
) -> PeerHealth:
    """A gateway's own health as an HA member, from how long ago each peer it watches (its groups' members
    and a few witnesses) last answered (None: never): `up` while one answered within `fresh` seconds (or it
    watches no peer at all), `unknown` before any answered, else `down` (cut off: it must claim nothing)."""
    state: Liveness
    if not answer_ages or any(age is not None and age <= fresh for age in answer_ages):
        state = "up"
    elif all(age is None for age in answer_ages):
        state = "unknown"
    else:
        state = "down"
    return _carried(previous, state, now)
