"""Changes committed by any coordinator of a shared database, heard here: PostgreSQL LISTEN on a connection
of its own, on a thread of its own, feeding the process's ChangeNotifier.

Store.write sends `NOTIFY wgmesh_changes, '<version>'` inside the writing transaction, so PostgreSQL
delivers it to every listening coordinator (this one included) once the write commits, and never for one
rolled back. The listener blocks on its socket, no polling loop. When the database goes away it reconnects
with back-off; on each (re)connection it wakes every waiter once, since changes made meanwhile were not
heard. On SQLite there is nothing to listen to: one coordinator, woken in process by Store.on_change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

import psycopg
from psycopg import sql

from wgmesh.coordinator.store import CHANGES_CHANNEL, Store, redacted
from wgmesh.logs import kv

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
"""Seconds between reconnection attempts: doubling from the first to the ceiling."""

CHECK_STOP = 0.5
"""How long one wait for notifications lasts before the thread looks whether it should stop: the bound on
how long the server's shutdown waits for it."""


class ChangeFeed(Protocol):
    """Where changes made by other coordinators come from: started with the server, stopped with it."""

    def start(self, notify: Callable[[int], None]) -> None: ...

    def stop(self) -> None: ...


class PgListener:
    """LISTEN on the store's database; `notify(version)` for every change committed by any coordinator,
    and `notify(0)` once per (re)connection."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        """Set while the listener holds a LISTENing connection (tests wait on it)."""

    def start(self, notify: Callable[[int], None]) -> None:
        self._thread = threading.Thread(target=self._run, args=(notify,), name="pg-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CHECK_STOP * 4)

    def _run(self, notify: Callable[[int], None]) -> None:
        delay = BACKOFF_FIRST
        while not self._stop.is_set():
            try:
                with self.store.dedicated() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANGES_CHANNEL)))
                    self.connected.set()
                    log.info("listening for changes", extra=kv(db=redacted(self.store.url)))
                    delay = BACKOFF_FIRST
                    notify(0)  # whatever changed while no one listened: every waiter looks again
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=CHECK_STOP):
                            notify(int(note.payload) if note.payload.isdigit() else 0)
            except psycopg.Error as error:
                self.connected.clear()
                if self._stop.is_set():
                    return
                # Once per outage: its retries are not news (the coordinator says "database unavailable").
                log.log(
                    logging.WARNING if delay == BACKOFF_FIRST else logging.DEBUG,
                    "change listener lost the database",
                    extra=kv(db=redacted(self.store.url), error=str(error).strip(), retry_in=delay),
                )
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        self.connected.clear()


def change_feed(store: Store) -> ChangeFeed | None:
    """The feed of other coordinators' changes for this store: a listener on PostgreSQL, none on SQLite."""
    return PgListener(store) if store.shared else None
