"""The cluster-wide periodic job: deleting what has expired (dashboard sessions, relay-ticket tombstones),
run by one coordinator of the database at a time.

On PostgreSQL the coordinator that holds an advisory lock runs it. The lock is taken with
pg_try_advisory_lock on a connection of its own and held as long as that connection lives, so when its
holder dies (or loses the database) PostgreSQL releases it and another coordinator takes it at its next
round. On SQLite the one coordinator just runs it. Expired rows are already refused when read; the sweep
only keeps the tables from growing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg

from wgmesh.coordinator.registry import drop_stale_tombstones
from wgmesh.coordinator.sessions import SessionTable
from wgmesh.coordinator.store import Store
from wgmesh.logs import kv

log = logging.getLogger(__name__)

INTERVAL = 300.0
"""Seconds between rounds: sessions last hours and tombstones a day, so minutes late costs nothing."""

LOCK_KEY = 0x77676D7368_01
"""The advisory lock's key ("wgmsh", job 1): one bigint no other application on the database uses."""


class Election:
    """Whether this coordinator is the one that runs the cluster-wide jobs (PostgreSQL's advisory lock)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._conn: psycopg.Connection[Any] | None = None

    def holding(self) -> bool:
        """True while this coordinator holds the lock; tries to take it when it does not (never waits)."""
        if not self.store.shared:
            return True
        try:
            if self._conn is not None:
                self._conn.execute(b"SELECT 1")  # still ours: the lock lives as long as this connection
                return True
            conn = self.store.dedicated()
            taken = conn.execute(b"SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
            if taken is not None and taken[0]:
                self._conn = conn
                log.info("running the cluster-wide jobs", extra=kv(lock=LOCK_KEY))
                return True
            conn.close()
            return False
        except psycopg.Error as error:
            self.release()
            log.warning("cluster-wide job lock not held", extra=kv(error=str(error).strip()))
            return False

    def release(self) -> None:
        """Give the lock up (closing its connection ends it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def sweep(store: Store, sessions: SessionTable) -> tuple[int, int]:
    """Delete expired sessions and relay-ticket tombstones; how many of each."""
    ended = sessions.expire()
    with store.write(bump=False) as w:
        dropped = drop_stale_tombstones(w.conn, time.time())
    return ended, dropped


async def run(store: Store, sessions: SessionTable, interval: float = INTERVAL) -> None:
    """Every `interval` seconds, sweep if this coordinator holds the job (until cancelled)."""
    election = Election(store)
    try:
        while True:
            try:
                if await asyncio.to_thread(election.holding):
                    ended, dropped = await asyncio.to_thread(sweep, store, sessions)
                    if ended or dropped:
                        log.info("expired rows deleted", extra=kv(sessions=ended, tombstones=dropped))
            except Exception as error:  # the database is away: the next round tries again
                log.warning("expiry sweep failed", extra=kv(error=str(error).strip()))
            await asyncio.sleep(interval)
    finally:
        election.release()
