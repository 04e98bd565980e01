"""Which coordinator URL to use next, given failures and time: a pure rule for the agent and the CLI.

All URLs name coordinators of one registry (one pin or CA covers them). A client starts on the first,
moves to the next one when a request finds the current one unreachable, stays on one that works, and
tries the first again after `FailoverConfig.retry_first_after` (the first is the one the operator
prefers: the nearest, or the one a load balancer would pick). The caller owns the clock and the HTTP;
`ApiClient` (wgmesh/api_client.py) is the one edge that acts on these answers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class FailoverConfig:
    """Thresholds, in seconds."""

    retry_first_after: float = 60.0
    """On another URL this long: try the first again (a request that fails there moves on at once)."""


DEFAULT = FailoverConfig()


@dataclass(frozen=True, slots=True)
class Choice:
    """The URLs, the index of the one in use, and when the client moved to it (monotonic seconds)."""

    urls: tuple[str, ...]
    current: int = 0
    since: float = 0.0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("a coordinator URL is needed")
        if not 0 <= self.current < len(self.urls):
            raise ValueError(f"index {self.current} is not one of {len(self.urls)} URLs")

    @property
    def url(self) -> str:
        """The URL in use."""
        return self.urls[self.current]


def before_request(choice: Choice, now: float, config: FailoverConfig = DEFAULT) -> Choice:
    """The choice to send the next request with: back to the first once `retry_first_after` has passed."""
    if choice.current != 0 and now - choice.since >= config.retry_first_after:
        return replace(choice, current=0, since=now)
    return choice


def after_failure(choice: Choice, now: float) -> Choice:
    """The choice after the URL in use did not answer: the next one, round the list."""
    if len(choice.urls) == 1:
        return choice
    return replace(choice, current=(choice.current + 1) % len(choice.urls), since=now)


def attempts(choice: Choice) -> int:
    """How many URLs one request may try before giving up: each once."""
    return len(choice.urls)
