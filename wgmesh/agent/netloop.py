"""The agent's packet thread: one uvloop event loop for the relay shim and the prober.

Kept apart from the threads that long-poll the coordinator and apply netmaps, so a slow HTTP call or a
large reconcile never stalls relayed datagrams.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import uvloop

_T = TypeVar("_T")


class NetLoop:
    """An event loop running on a daemon thread; other threads hand it work through `submit`/`call`."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="wgmesh-net", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        """Start the thread (once)."""
        if not self._thread.is_alive():
            self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Run a coroutine on the loop; the returned future is for the calling thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[[], _T], timeout: float = 5.0) -> _T:
        """Run `fn` on the loop thread and wait for its result."""

        async def wrapper() -> _T:
            return fn()

        return self.submit(wrapper()).result(timeout)

    def stop(self) -> None:
        """Stop the loop and wait for the thread."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
