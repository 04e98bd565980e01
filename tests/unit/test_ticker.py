"""The agent's periodic jobs (wgmesh/agent/ticker.py): grid ticks, one run at a time, soon, stop."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from wgmesh.agent.ticker import Ticker, next_tick
from wgmesh.lab import wait_until


@pytest.fixture
def ticker() -> Iterator[Ticker]:
    t = Ticker()
    yield t
    t.stop()


def test_next_tick_skips_the_ticks_a_long_run_covered() -> None:
    assert next_tick(10.0, 2.0, now=10.5) == 12.0
    assert next_tick(10.0, 2.0, now=12.0) == 14.0  # a tick exactly at now has passed
    assert next_tick(10.0, 2.0, now=17.3) == 18.0  # 12, 14 and 16 were covered by the run: skipped
    assert next_tick(10.0, 0.25, now=1000.0) == 1000.25


def test_a_job_runs_every_interval_at_once_when_asked(ticker: Ticker) -> None:
    runs: list[float] = []
    ticker.every("fast", lambda: runs.append(time.monotonic()), 0.05, at_once=True)
    started = time.monotonic()
    ticker.start()
    wait_until(lambda: len(runs) >= 5, 30, "five runs")
    assert runs[0] - started < 0.05 * 20  # at once, not after an interval (generous for slow machines)
    assert all(b > a for a, b in itertools.pairwise(runs))


def test_a_job_without_at_once_waits_an_interval(ticker: Ticker) -> None:
    ran = threading.Event()
    ticker.every("later", ran.set, 3600)
    ticker.start()
    assert not ran.wait(0.3)


def test_never_two_runs_of_one_job_at_once(ticker: Ticker) -> None:
    lock = threading.Lock()
    running, most, runs = 0, 0, 0

    def slow() -> None:
        nonlocal running, most, runs
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # longer than the interval: ticks come due while it runs
        with lock:
            running -= 1
            runs += 1

    ticker.every("slow", slow, 0.01, at_once=True)
    ticker.start()
    wait_until(lambda: runs >= 4, 30, "four runs")
    assert most == 1


def test_soon_during_a_run_gives_exactly_one_more_run(ticker: Ticker) -> None:
    """What the agent's `report_soon` relies on: a report asked for while one is being made is made
    again after it (the one in progress may have read older state), once however often it was asked."""
    release = threading.Event()
    runs: list[int] = []

    def job() -> None:
        runs.append(1)
        if len(runs) == 1:
            release.wait(30)

    ticker.every("status", job, 3600, at_once=True)
    ticker.start()
    wait_until(lambda: len(runs) == 1, 30, "the first run")
    ticker.soon("status")
    ticker.soon("status")
    release.set()
    wait_until(lambda: len(runs) == 2, 30, "the run asked for during the first")
    time.sleep(0.2)
    assert len(runs) == 2


def test_soon_runs_a_job_now(ticker: Ticker) -> None:
    runs: list[float] = []
    ticker.every("status", lambda: runs.append(time.monotonic()), 3600)
    ticker.start()
    ticker.soon("status")
    wait_until(lambda: len(runs) == 1, 30, "the run asked for")
    ticker.soon("status")
    wait_until(lambda: len(runs) == 2, 30, "the second run asked for")
    ticker.soon("no such job")  # nothing to run, nothing raised


def test_jobs_added_after_start_run(ticker: Ticker) -> None:
    ticker.start()
    ran = threading.Event()
    ticker.every("late", ran.set, 3600, at_once=True)
    wait_until(ran.is_set, 30, "the job added after start")


def test_a_failing_job_keeps_its_schedule(ticker: Ticker, caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    def broken() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    ticker.every("broken", broken, 0.02, at_once=True)
    ticker.start()
    wait_until(lambda: calls >= 3, 30, "three runs of the failing job")
    assert any("periodic job failed" in r.getMessage() for r in caplog.records)


def test_stop_ends_every_thread_without_waiting_for_a_run(ticker: Ticker) -> None:
    release = threading.Event()
    entered = threading.Event()

    def stuck() -> None:
        entered.set()
        release.wait(30)

    quick: list[int] = []
    ticker.every("stuck", stuck, 0.01, at_once=True)
    ticker.every("quick", lambda: quick.append(1), 0.01, at_once=True)
    ticker.start()
    wait_until(entered.is_set, 30, "the stuck job to start")
    wait_until(lambda: quick, 30, "the quick job to run")
    before = time.monotonic()
    ticker.stop()
    assert time.monotonic() - before < 1  # did not wait for the stuck run
    threads = {t.name: t for t in threading.enumerate()}
    wait_until(lambda: not threads["job-quick"].is_alive(), 30, "the idle job's thread to end")
    count = len(quick)
    release.set()
    wait_until(lambda: not threads["job-stuck"].is_alive(), 30, "the stuck job's thread to end")
    assert len(quick) == count


def test_bad_schedules_are_refused() -> None:
    t = Ticker()
    with pytest.raises(ValueError, match="positive"):
        t.every("zero", lambda: None, 0)
    t.every("once", lambda: None, 1)
    with pytest.raises(ValueError, match="already"):
        t.every("once", lambda: None, 1)
