"""Heartbeats written in batches: the `last_seen` of every node heard from, one transaction a second.

At 1,000 gateways a heartbeat arrives every 10 ms; a transaction each (with SQLite's commit) would cost
more than everything else the coordinator does at steady state. `last_seen` only says who is online (a
45 s window), so a second's delay changes nothing anyone sees, and readers in this process flush first.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy import bindparam, update

from wgmesh.coordinator import schema
from wgmesh.coordinator.store import Store
from wgmesh.errors import WgmeshError
from wgmesh.logs import kv
from wgmesh.values import NodeId

log = logging.getLogger("wgmesh.coordinator")

FLUSH_AFTER = 1.0
"""Seconds from the first heartbeat of a batch to its write."""


class LastSeenBatch:
    """`last_seen` of the nodes heard from since the last write, written together."""

    def __init__(self, store: Store, delay: float = FLUSH_AFTER) -> None:
        self.store = store
        self.delay = delay
        self._pending: dict[NodeId, datetime] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def note(self, node_id: NodeId, at: datetime) -> None:
        """Remember that `node_id` was heard from at `at`; written within `delay` seconds."""
        with self._lock:
            self._pending[node_id] = at
            if self._timer is None:
                self._timer = threading.Timer(self.delay, self._flush_on_timer)
                self._timer.daemon = True
                self._timer.start()

    def _flush_on_timer(self) -> None:
        try:
            self.flush()
        except WgmeshError as exc:
            # The database is away: these heartbeats are lost; the next ones say the same.
            log.warning("heartbeats not written", extra=kv(code=exc.code, error=exc.message))

    def flush(self) -> None:
        """Write what is pending now (readers of `last_seen` in this process call it first)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if not pending:
            return
        nodes = schema.nodes
        statement = update(nodes).where(nodes.c.id == bindparam("node")).values(last_seen=bindparam("at"))
        with self.store.write(bump=False) as w:
            # A node deleted meanwhile matches no row: nothing to write, nothing to fail.
            w.conn.execute(statement, [{"node": node_id, "at": at} for node_id, at in pending.items()])
