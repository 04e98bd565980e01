"""How often one agent's long-poll may be answered while versions come in bursts.

Every version wakes every long-poll, and an agent that comes back with an older version is answered at
once. In a burst (a fleet's first reports: a version each) every agent is then answered again and again,
one version at a time, and the event loop does nothing else: at 1,000 agents the round of first reports
was a million answers' worth of work, and the reports that made the versions waited behind them.

So each agent's answers come from a token bucket: `BURST` at once (a change of two or three versions goes
out as fast as before), then one per `gap(waiters)` seconds, while there is a burst: at least `BURST`
versions within the last gap. Out of a burst nobody waits, whatever their bucket holds (at 5,000 agents a
change right after the round of first reports waited out the agents' empty buckets: 9 s instead of 3). An answer held back goes out with every
version committed while it waited: a burst costs each agent one answer per gap, not one per version.
The gap grows with the agents waiting, so that answering a burst takes about `SHARE_PER_WAITER` /
(the cost of one answer) of the coordinator's core, and what made the versions keeps the rest.

`delay` and `spend` are pure; `Pacer` holds the buckets (on the event loop: no lock).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from wgmesh.values import NodeId

BURST = 3.0
"""Answers an agent gets at once before pacing starts: a route change is two versions."""
SHARE_PER_WAITER = 0.0015
"""Seconds of gap per waiting agent. An answer costs the event loop 0.5 to 0.8 ms (a 1,000-node change
reaches every agent in 0.7 to 1 s), so answering a burst takes at most about half of the core: 1.5 s between
one agent's answers at 1,000 agents, 7.5 s at 5,000, 5 ms at 3."""
FORGET_AFTER = 300.0
"""A bucket untouched this long is full whatever the gap, and is dropped (deleted nodes' buckets go)."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """An agent's answer tokens, as of `at` (the event loop's clock)."""

    tokens: float
    at: float


def gap(waiters: int, share: float = SHARE_PER_WAITER) -> float:
    """Seconds between one agent's answers once its burst is spent, with `waiters` long-polls waiting."""
    return max(waiters, 1) * share


def _tokens(bucket: Bucket | None, now: float, every: float) -> float:
    if bucket is None or every <= 0:
        return BURST
    return min(BURST, bucket.tokens + max(now - bucket.at, 0.0) / every)


def delay(bucket: Bucket | None, now: float, every: float) -> float:
    """Seconds until the agent may be answered (0: now), one answer per `every` seconds after a burst."""
    missing = 1.0 - _tokens(bucket, now, every)
    return 0.0 if missing <= 0 else missing * every


def spend(bucket: Bucket | None, now: float, every: float) -> Bucket:
    """The bucket after an answer at `now` (answered early, at a deadline, it may go below zero)."""
    return Bucket(_tokens(bucket, now, every) - 1.0, now)


class Pacer:
    """Every agent's bucket, by node."""

    def __init__(self, share: float = SHARE_PER_WAITER) -> None:
        self.share = share
        self._buckets: dict[NodeId, Bucket] = {}
        self._answers = 0

    def delay(self, node_id: NodeId, now: float, waiters: int, recent: Callable[[float], int]) -> float:
        """Seconds until `node_id`'s long-poll may be answered; `recent(seconds)`: the versions committed
        within the last `seconds` (none held back unless that is a burst)."""
        every = gap(waiters, self.share)
        if recent(every) < BURST:
            return 0.0
        return delay(self._buckets.get(node_id), now, every)

    def answered(self, node_id: NodeId, now: float, waiters: int) -> None:
        """`node_id` was answered at `now`."""
        self._buckets[node_id] = spend(self._buckets.get(node_id), now, gap(waiters, self.share))
        self._answers += 1
        if self._answers % 4096 == 0:
            self._buckets = {n: b for n, b in self._buckets.items() if now - b.at < FORGET_AFTER}

    def __len__(self) -> int:
        return len(self._buckets)
