"""The nodes' status reports as digests (wgmesh.topology_summary.ReportDigest), kept while each report
stands: a summary reads the reports' timestamps (one small query) and parses again only those that
changed since, instead of a million peer entries on every request."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select

from wgmesh.coordinator import schema
from wgmesh.coordinator.store import IN_CHUNK, Store, as_utc
from wgmesh.models import Node
from wgmesh.topology_summary import ReportDigest, digest_report
from wgmesh.values import NodeId


class ReportDigests:
    """The digest of every node's last report, parsed again only when the report changed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._held: dict[NodeId, tuple[datetime, ReportDigest]] = {}
        self.generation = 0
        """Raised whenever a digest is made or dropped: what a cached summary was built from changed."""

    def current(self, nodes: Sequence[Node]) -> dict[NodeId, ReportDigest]:
        """The digests of the nodes' last reports, by node id."""
        node_of_key = {n.public_key: n.id for n in nodes}
        status = schema.status
        with self._lock:
            # A digest names peers by the node ids their keys had when the report was read. Not made again
            # when keys change (an enrollment would cost every report parsed again, seconds at 1,000
            # nodes): a report stands one status interval, and ids are never reused (deleted nodes'
            # entries are left out by the summary, which knows the nodes).
            with self.store.read() as conn:
                stamps = {
                    NodeId(r.node_id): r.reported_at
                    for r in conn.execute(select(status.c.node_id, status.c.reported_at))
                }
                stale = [
                    i for i, at in stamps.items() if (held := self._held.get(i)) is None or held[0] != at
                ]
                for start in range(0, len(stale), IN_CHUNK):
                    rows = conn.execute(
                        select(status.c.node_id, status.c.reported_at, status.c.report).where(
                            status.c.node_id.in_(stale[start : start + IN_CHUNK])
                        )
                    )
                    for r in rows:
                        made = as_utc(r.reported_at)
                        self._held[NodeId(r.node_id)] = (
                            r.reported_at,
                            digest_report(r.report, node_of_key, made),
                        )
                        self.generation += 1
            for gone in set(self._held) - set(stamps):
                del self._held[gone]
                self.generation += 1
            return {i: digest for i, (_, digest) in self._held.items()}
