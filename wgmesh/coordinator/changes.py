"""Wake-ups for long-polling requests: a committed write sets the event every waiter holds."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict

KEPT_COMMITS = 256
"""Commit times remembered, by version: a long-poll answers one of the last few."""


class ChangeNotifier:
    """Tells waiting requests, in this process, that the registry version moved."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.waiters = 0
        self.stopping = False
        """Set once the server stops: whoever waits answers now instead of waiting on."""
        self._committed: OrderedDict[int, float] = OrderedDict()
        self._commits_lock = threading.Lock()
        self._stopped = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the loop the waiters run on (writes come from worker threads)."""
        self._loop = loop

    def notify_threadsafe(self, version: int) -> None:
        """Called from any thread after a commit."""
        if version:
            with self._commits_lock:  # writer threads and the PostgreSQL listener's
                self._committed.setdefault(version, time.monotonic())
                while len(self._committed) > KEPT_COMMITS:
                    self._committed.popitem(last=False)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def age(self, version: int) -> float | None:
        """Seconds since `version` was committed, if this process heard of it."""
        committed = self._committed.get(version)
        return None if committed is None else time.monotonic() - committed

    def committed_within(self, seconds: float) -> int:
        """How many versions this process heard of in the last `seconds` (up to KEPT_COMMITS)."""
        since = time.monotonic() - seconds
        count = 0
        with self._commits_lock:
            for at in reversed(self._committed.values()):
                if at < since:
                    break
                count += 1
        return count

    def stop(self) -> None:
        """The server is stopping (on the loop): wake every waiter, for good."""
        self.stopping = True
        self._stopped.set()
        self._notify()

    def current(self) -> asyncio.Event:
        """The event the next change sets; take it *before* reading the version to miss nothing."""
        return self._event

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait for `event` up to `timeout` seconds; True when it fired (at once once stopping)."""
        if self.stopping:
            return True
        self.waiters += 1
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self.waiters -= 1

    async def hold(self, seconds: float) -> None:
        """Hold a long-poll whose answer is paced (coordinator/pacing.py) for `seconds`, or until the server
        stops; it counts as waiting. Not woken by changes: it answers with all of them when it is due."""
        if self.stopping:
            return
        self.waiters += 1
        try:
            async with asyncio.timeout(seconds):
                await self._stopped.wait()
        except TimeoutError:
            pass
        finally:
            self.waiters -= 1
