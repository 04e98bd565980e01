"""coordinator/pacing.py: an agent's long-poll answers come from a token bucket whose refill slows with
the number of agents waiting."""

from __future__ import annotations

import pytest

from wgmesh.coordinator import pacing
from wgmesh.coordinator.pacing import BURST, Bucket, Pacer, delay, gap, spend
from wgmesh.values import NodeId


def test_the_gap_grows_with_the_agents_waiting() -> None:
    assert gap(0) == gap(1) == pacing.SHARE_PER_WAITER
    assert gap(1000) == pytest.approx(1.5)
    assert gap(5000) == pytest.approx(5 * gap(1000))
    assert gap(10, share=0.5) == 5.0


def test_a_new_agent_has_its_whole_burst() -> None:
    bucket = None
    for _ in range(int(BURST)):
        assert delay(bucket, 100.0, 2.0) == 0.0
        bucket = spend(bucket, 100.0, 2.0)
    assert delay(bucket, 100.0, 2.0) == pytest.approx(2.0)


def test_once_spent_one_answer_per_gap() -> None:
    empty = Bucket(tokens=0.0, at=10.0)
    assert delay(empty, 10.0, 2.0) == pytest.approx(2.0)
    assert delay(empty, 11.5, 2.0) == pytest.approx(0.5)
    assert delay(empty, 12.0, 2.0) == 0.0
    after = spend(empty, 12.0, 2.0)
    assert after == Bucket(tokens=0.0, at=12.0)


def test_the_bucket_refills_to_the_burst_and_no_further() -> None:
    empty = Bucket(tokens=0.0, at=0.0)
    assert spend(empty, 1000.0, 1.0).tokens == BURST - 1


def test_an_answer_forced_early_leaves_a_debt() -> None:
    """Answered at its deadline before it was due (an agent's `wait` ran out), the next waits longer."""
    empty = Bucket(tokens=0.0, at=0.0)
    owing = spend(empty, 0.5, 2.0)
    assert owing.tokens == pytest.approx(-0.75)
    assert delay(owing, 0.5, 2.0) == pytest.approx(3.5)


def test_no_gap_means_no_pacing() -> None:
    assert delay(Bucket(tokens=-5.0, at=0.0), 0.0, 0.0) == 0.0


def burst(seconds: float) -> int:
    """`recent` in a burst: a hundred versions whatever the window."""
    return 100


def test_the_pacer_keeps_a_bucket_per_node_and_forgets_idle_ones() -> None:
    pacer = Pacer(share=1.0)
    a, b = NodeId(1), NodeId(2)
    for _ in range(int(BURST)):
        pacer.answered(a, 0.0, waiters=2)
    assert pacer.delay(a, 0.0, waiters=2, recent=burst) == pytest.approx(2.0)
    assert pacer.delay(b, 0.0, waiters=2, recent=burst) == 0.0
    assert len(pacer) == 1
    # The buckets are swept every 4,096 answers: one untouched for FORGET_AFTER is dropped.
    for _ in range(4096 - int(BURST)):
        pacer.answered(b, pacing.FORGET_AFTER + 1.0, waiters=2)
    assert len(pacer) == 1 and pacer.delay(a, pacing.FORGET_AFTER + 1.0, waiters=2, recent=burst) == 0.0


def test_out_of_a_burst_nobody_waits_whatever_their_bucket() -> None:
    """A change after a burst goes to everyone at once, though the burst emptied their buckets."""
    pacer = Pacer(share=1.0)
    a = NodeId(1)
    for _ in range(int(BURST) + 2):
        pacer.answered(a, 0.0, waiters=4)
    windows: list[float] = []

    def two_versions(seconds: float) -> int:
        windows.append(seconds)
        return int(BURST) - 1

    assert pacer.delay(a, 0.0, waiters=4, recent=two_versions) == 0.0
    assert windows == [4.0]  # the versions are counted over one gap
    assert pacer.delay(a, 0.0, waiters=4, recent=lambda s: int(BURST)) > 4.0
