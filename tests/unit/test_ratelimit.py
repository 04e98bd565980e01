"""The rate limits' token buckets (wgmesh.coordinator.ratelimit) on a clock the test moves."""

from __future__ import annotations

import pytest

from wgmesh.agent.backoff import Backoff
from wgmesh.coordinator.ratelimit import Limit, RateLimits, TokenBuckets
from wgmesh.errors import ValidationError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_address_waits_for_the_refill() -> None:
    clock = Clock()
    buckets = TokenBuckets(Limit(3, 0.5), clock)
    assert [buckets.take("198.51.100.7") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("198.51.100.7") == pytest.approx(2.0)  # one token per 2 s
    assert buckets.take("203.0.113.9") == 0.0  # another address has its own bucket
    clock.now += 1.0
    assert buckets.take("198.51.100.7") == pytest.approx(1.0)
    clock.now += 1.0
    assert buckets.take("198.51.100.7") == 0.0
    assert buckets.take("198.51.100.7") == pytest.approx(2.0)


def test_wait_takes_nothing_and_spend_takes_even_from_an_empty_bucket() -> None:
    clock = Clock()
    buckets = TokenBuckets(Limit(2, 1.0), clock)
    assert buckets.wait("a") == 0.0
    buckets.spend("a")
    buckets.spend("a")
    buckets.spend("a")  # failures that already happened: the bucket stays at zero
    assert buckets.wait("a") == pytest.approx(1.0)
    assert buckets.wait("a") == pytest.approx(1.0)


def test_idle_addresses_are_forgotten_and_the_table_is_capped() -> None:
    clock = Clock()
    buckets = TokenBuckets(Limit(2, 1.0), clock, capacity=100)
    for i in range(1000):
        buckets.spend(f"10.0.{i // 256}.{i % 256}")
    assert len(buckets) == 100  # the least recently used went first
    assert buckets.wait("10.0.3.231") == 0.0  # the last one is still there, with a token left
    buckets.spend("10.0.3.231")
    assert buckets.wait("10.0.3.231") > 0.0
    clock.now += 10.0  # every bucket is full again: idle addresses are swept as others arrive
    for i in range(60):
        buckets.spend(f"192.0.2.{i}")
    assert len(buckets) == 60  # four idle ones swept per request: the hundred old ones are gone
    assert buckets.wait("10.0.3.231") == 0.0


def test_an_off_limit_never_refuses() -> None:
    buckets = TokenBuckets(Limit.parse("off"), Clock())
    assert all(buckets.take("a") == 0.0 for _ in range(10_000))
    assert len(buckets) == 0


@pytest.mark.parametrize("text", ["", "30", "0/1", "30/0", "30/-1", "x/1", "30/inf", "30/nan", "1.5/1"])
def test_bad_limits_are_refused_with_the_accepted_form(text: str) -> None:
    with pytest.raises(ValidationError, match="BURST/PER_SECOND"):
        Limit.parse(text)


def test_rate_limit_flags_change_one_kind_each() -> None:
    limits = RateLimits.parse(["enroll=5/0.5", "failures=off"])
    assert limits.enroll == Limit(5, 0.5)
    assert not limits.failures.enabled
    assert limits.login == RateLimits().login
    with pytest.raises(ValidationError, match="enroll, login, failures"):
        RateLimits.parse(["status=5/1"])
    with pytest.raises(ValidationError, match="KIND=BURST/PER_SECOND"):
        RateLimits.parse(["5/1"])


def test_backoff_waits_at_least_what_the_server_asked() -> None:
    backoff = Backoff(initial=1.0, maximum=30.0)
    assert backoff.next_delay(120.0) == 120.0  # Retry-After above the cap still counts
    assert backoff.next_delay(None) <= 2.0
