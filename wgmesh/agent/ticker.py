"""The agent's periodic jobs: each on a thread of its own, every so many seconds.

What the agent needs of a scheduler is small (four interval jobs, one of them sometimes wanted at once),
and a general one cost a gateway 4.5 MB of memory and a pool of threads. The rules here:

- a job never runs twice at once: it has one thread;
- a run that outlasts the interval skips the ticks it covered and the job goes on at the next tick of its
  grid, so a slow coordinator gets no back-to-back reports;
- `soon(name)` runs a job now (or right after the run in progress, which may have read older state), and
  its next tick comes an interval after that run;
- an exception is logged and the job keeps its schedule;
- `stop()` wakes every thread to end; it does not wait for a run in progress (an HTTP call may be
  waiting on a coordinator that is gone), and the threads are daemons.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from wgmesh.logs import kv

log = logging.getLogger(__name__)


@dataclass
class _Job:
    name: str
    run: Callable[[], None]
    seconds: float
    at_once: bool
    wake: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


def next_tick(due: float, seconds: float, now: float) -> float:
    """The first tick of the grid `due + k * seconds` (k ≥ 1) that is still ahead of `now`."""
    following = due + seconds
    if following > now:
        return following
    return following + seconds * (math.floor((now - following) / seconds) + 1)


class Ticker:
    """Named jobs run every so many seconds, each on its own daemon thread."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._stopping = threading.Event()
        self._started = False
        self._lock = threading.Lock()

    def every(self, name: str, run: Callable[[], None], seconds: float, *, at_once: bool = False) -> None:
        """Run `run` every `seconds` (first at once, or after one interval); a started ticker starts it now."""
        if seconds <= 0:
            raise ValueError(f"job {name}: an interval must be positive, not {seconds}")
        with self._lock:
            if name in self._jobs:
                raise ValueError(f"job {name} is already scheduled")
            job = _Job(name, run, seconds, at_once)
            self._jobs[name] = job
            if self._started:
                self._launch(job)

    def soon(self, name: str) -> None:
        """Run the named job now instead of at its next tick (nothing if there is no such job)."""
        job = self._jobs.get(name)
        if job is not None:
            job.wake.set()

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for job in self._jobs.values():
                self._launch(job)

    def stop(self) -> None:
        """End every job's thread once its run in progress (if any) returns; does not wait for it."""
        self._stopping.set()
        for job in list(self._jobs.values()):
            job.wake.set()

    def _launch(self, job: _Job) -> None:
        job.thread = threading.Thread(target=self._loop, args=(job,), name=f"job-{job.name}", daemon=True)
        job.thread.start()

    def _loop(self, job: _Job) -> None:
        due = time.monotonic() + (0.0 if job.at_once else job.seconds)
        while not self._stopping.is_set():
            asked = job.wake.wait(max(0.0, due - time.monotonic()))
            if self._stopping.is_set():
                return
            if asked:
                job.wake.clear()
            try:
                job.run()
            except Exception:  # a job's failure is logged; its schedule goes on
                log.exception("periodic job failed", extra=kv(job=job.name))
            # A run asked for restarts the grid (the next one an interval later); a tick keeps it.
            now = time.monotonic()
            due = now + job.seconds if asked else next_tick(due, job.seconds, now)
