"""Retry pacing: exponential back-off with jitter, reset on success."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays of initial·2ⁿ up to `maximum`, each scaled by a random factor in [1-jitter, 1]."""

    initial: float = 1.0
    maximum: float = 30.0
    jitter: float = 0.2
    _attempt: int = field(default=0, init=False)

    def next_delay(self, at_least: float | None = None) -> float:
        """The delay before the next retry; grows with every call. Never under `at_least`, the wait a
        server asked for (`Retry-After` of a 429), which may exceed the cap."""
        base = min(self.maximum, self.initial * (2.0**self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        delay = base * (1 - self.jitter * random.random())  # noqa: S311 - pacing, not security
        return max(delay, at_least or 0.0)

    def reset(self) -> None:
        """Back to the initial delay after a success."""
        self._attempt = 0
