"""Pure: per-address token buckets for the coordinator's rate limits, with an injectable clock.

A bucket holds up to `burst` tokens and refills at `per_second`; a request takes one. An address whose bucket
is full again is forgotten (it is the same as one never seen), and the table holds at most `capacity`
addresses, dropping the least recently used: memory stays bounded whatever a flood of addresses sends.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import islice

from wgmesh.errors import ValidationError

Clock = Callable[[], float]

CAPACITY = 65536
"""Addresses tracked per limit: a few MiB at most; past it the least recently used address is forgotten."""
SWEEP = 4
"""Idle addresses looked at per request: enough to keep pace with the table's growth, constant work."""


@dataclass(frozen=True)
class Limit:
    """`burst` requests at once, then `per_second` on average; `burst` 0 turns the limit off."""

    burst: int
    per_second: float

    @property
    def enabled(self) -> bool:
        return self.burst > 0

    @classmethod
    def parse(cls, text: str) -> Limit:
        """`BURST/PER_SECOND` (`30/0.5`) or `off`."""
        if text.strip() == "off":
            return cls(0, 0.0)
        burst, sep, rate = text.partition("/")
        try:
            limit = cls(int(burst), float(rate)) if sep else None
        except ValueError:
            limit = None
        if limit is None or limit.burst < 1 or not 0 < limit.per_second < math.inf:
            raise ValidationError(
                f"rate limit {text!r} must be BURST/PER_SECOND (e.g. 30/0.5) or off",
                code="invalid_rate_limit",
            )
        return limit

    def __str__(self) -> str:
        return f"{self.burst}/{self.per_second:g}" if self.enabled else "off"


@dataclass(frozen=True)
class RateLimits:
    """The coordinator's limits per source address. The defaults are far above what a fleet sends: every
    gateway enrolls once from its own address, a person logs in a few times a day, and a credential fails
    only when a node was deleted or a token mistyped."""

    enroll: Limit = Limit(60, 1.0)
    """Enrollments (`POST /api/v1/enroll`), whether the token is good or not."""
    login: Limit = Limit(20, 0.2)
    """Dashboard logins (`POST /api/v1/session`), whether the token is good or not."""
    failures: Limit = Limit(100, 1.0)
    """Answers 401 (a missing, unknown or revoked credential or token); once spent, the address gets 429 for
    every API request until the bucket refills, so credentials cannot be guessed at speed."""

    KINDS = ("enroll", "login", "failures")

    def with_(self, kind: str, limit: Limit) -> RateLimits:
        """These limits with `kind` changed."""
        if kind not in self.KINDS:
            raise ValidationError(
                f"rate limit {kind!r} must be one of {', '.join(self.KINDS)}", code="invalid_rate_limit"
            )
        return replace(self, **{kind: limit})

    @classmethod
    def parse(cls, specs: list[str]) -> RateLimits:
        """Defaults changed by `KIND=BURST/PER_SECOND` or `KIND=off` items (`--rate-limit`)."""
        limits = cls()
        for spec in specs:
            kind, sep, value = spec.partition("=")
            if not sep:
                raise ValidationError(
                    f"--rate-limit {spec!r} must be KIND=BURST/PER_SECOND or KIND=off",
                    code="invalid_rate_limit",
                )
            limits = limits.with_(kind.strip(), Limit.parse(value))
        return limits


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class TokenBuckets:
    """One limit's buckets, one per key (a source address)."""

    limit: Limit
    clock: Clock = time.monotonic
    capacity: int = CAPACITY
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict, init=False, repr=False)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take a token for `key`: 0.0 when it had one, else the seconds until it will (nothing taken)."""
        wait = self.wait(key)
        if wait == 0.0:
            self.spend(key)
        return wait

    def wait(self, key: str) -> float:
        """Seconds until `key` has a token (0.0: it has one now); takes nothing."""
        if not self.limit.enabled:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = self._refilled(bucket, self.clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.limit.per_second

    def spend(self, key: str) -> None:
        """Take a token from `key`, down to none (a failure that already happened counts whatever is left)."""
        if not self.limit.enabled:
            return
        now = self.clock()
        bucket = self._buckets.pop(key, None)
        tokens = float(self.limit.burst) if bucket is None else self._refilled(bucket, now)
        self._buckets[key] = _Bucket(max(0.0, tokens - 1.0), now)  # last: the most recently used
        self._sweep(now)

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        return min(float(self.limit.burst), bucket.tokens + (now - bucket.stamp) * self.limit.per_second)

    def _sweep(self, now: float) -> None:
        # The least recently used come first: forget those full again, then any over the capacity.
        for key in list(islice(self._buckets, SWEEP)):
            if self._refilled(self._buckets[key], now) >= self.limit.burst:
                del self._buckets[key]
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)
