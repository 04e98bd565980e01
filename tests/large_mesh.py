"""A generated registry of many gateways, written straight into a coordinator's database through the
registry's own store and schema (enrolling 1,000 nodes through the API takes minutes; this, seconds).

`fill(store, n)` writes `n` gateways with tags (`cloud:…`, `region:…`), sites, one subnet each (every
`CONFLICT_EVERY`-th gateway also claims its neighbour's: a conflict), every `OFFLINE_EVERY`-th offline, and
a status report per online gateway naming `peers_per_node` peers with paths that give every link state
(`expected_state` says which); `fill_database` does it on a database URL. The benchmark
(benchmarks/dashboard_scale.py) and the tests of the dashboard, the API's pages and `wgmesh status` use it.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from wgmesh.agent import reporting
from wgmesh.coordinator import schema
from wgmesh.coordinator.store import Store
from wgmesh.models import StatusReport
from wgmesh.topology import HANDSHAKE_FRESH
from wgmesh.values import NodeId

CLOUDS = ("aws", "gcp", "azure")
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1", "eu-central-1")
OFFLINE_EVERY = 50
CONFLICT_EVERY = 100
RELAY_EVERY = 7
STALE_EVERY = 11


@dataclass(frozen=True)
class LargeMesh:
    names: list[str]
    keys: list[str]
    offline: set[int]
    peers_per_node: int

    def tags(self, i: int) -> list[str]:
        return [f"cloud:{CLOUDS[i % len(CLOUDS)]}", f"region:{REGIONS[i % len(REGIONS)]}"]


def name(i: int) -> str:
    return f"gw-{i:04d}"


def site(i: int) -> str:
    """Pairs of gateways share a site (an HA pair's VPC)."""
    return f"vpc-{i // 2:04d}"


def public_key(i: int) -> str:
    """A WireGuard-shaped key (32 bytes, base64); nothing here handshakes."""
    return base64.b64encode(hashlib.sha256(f"large-mesh {i}".encode()).digest()).decode()


def subnet(i: int) -> str:
    return str(ipaddress.IPv4Network((0x0A000000 + (i << 8), 24)))


def peers_of(i: int, n: int, peers_per_node: int) -> list[int]:
    """The peers gateway `i` reports: the next `peers_per_node` gateways around the ring."""
    return [(i + k) % n for k in range(1, min(peers_per_node, n - 1) + 1)]


def reported_path(i: int, j: int) -> tuple[str | None, bool]:
    """What `i` reports of `j`: its path and whether the handshake is fresh."""
    relay = (i + j) % RELAY_EVERY == 0
    stale = (i * j) % STALE_EVERY == 3
    return ("relay" if relay else "direct"), not stale


def fill(
    store: Store, n: int, *, peers_per_node: int, now: datetime | None = None, condensed: bool = False
) -> LargeMesh:
    """Write `n` gateways and their reports into an initialised registry (ids 1..n: an empty one); with
    `condensed`, each report as the agent sends it (agent/reporting.condense: nominal peers left out,
    every other gateway in its netmap)."""
    now = now or datetime.now(UTC)
    stale_at = now - HANDSHAKE_FRESH - timedelta(minutes=5)
    offline = {i for i in range(n) if i % OFFLINE_EVERY == OFFLINE_EVERY - 1}
    mesh = LargeMesh([name(i) for i in range(n)], [public_key(i) for i in range(n)], offline, peers_per_node)
    overlay = ipaddress.IPv4Network("100.96.0.0/16")
    nodes = [
        {
            "id": i + 1,
            "name": mesh.names[i],
            "public_key": mesh.keys[i],
            "overlay_ip": str(overlay[i + 2]),
            "p2p": "auto",
            "tags": mesh.tags(i),
            "listen_port": 51820,
            "endpoints": [f"198.18.{i // 250}.{i % 250 + 1}:51820"],
            "static": False,
            "created_at": now,
            "last_seen": now - timedelta(hours=1) if i in offline else now,
            "allow_subnets": [],
            "site": site(i),
        }
        for i in range(n)
    ]
    routes = [
        {
            "node_id": i + 1,
            "prefix": subnet(i),
            "created_at": now,
            "decision": "approved",
            "decided_by": "test",
        }
        for i in range(n)
    ]
    routes += [
        {
            "node_id": i + 1,
            "prefix": subnet(i - 2),
            "created_at": now,
            "decision": "approved",
            "decided_by": "t",
        }
        for i in range(2, n)
        if i % CONFLICT_EVERY == CONFLICT_EVERY - 1
    ]
    statuses: list[dict[str, Any]] = []
    for i in range(n):
        if i in offline:
            continue
        peers = []
        for j in peers_of(i, n, peers_per_node):
            path, fresh = reported_path(i, j)
            peers.append(
                {
                    "public_key": mesh.keys[j],
                    "path": path,
                    "last_handshake": (now if fresh else stale_at).isoformat(),
                    "rtt_ms": float(1 + (i + j) % 40),
                    "rx_bytes": 1000 * j,
                    "tx_bytes": 1000 * i,
                    "endpoint": f"198.18.{j // 250}.{j % 250 + 1}:51820",
                    "health": "up" if fresh else "down",
                }
            )
        report: dict[str, Any] = {"peers": peers}
        if condensed:
            netmap = {mesh.keys[j]: NodeId(j + 1) for j in range(n) if j != i}
            short = reporting.condense(StatusReport.model_validate(report), netmap, now)
            report = short.model_dump(mode="json")
        statuses.append({"node_id": i + 1, "reported_at": now, "report": report})
    with store.write() as w:
        w.conn.execute(insert(schema.nodes), nodes)
        w.conn.execute(insert(schema.routes), routes)
        for start in range(0, len(statuses), 100):
            w.conn.execute(insert(schema.status), statuses[start : start + 100])
    return mesh


def fill_database(db_url: str, n: int, *, peers_per_node: int, condensed: bool = False) -> LargeMesh:
    """`fill` through a store of its own on a coordinator's database URL (the tests' module fixtures)."""
    store = Store(db_url)
    try:
        return fill(store, n, peers_per_node=peers_per_node, condensed=condensed)
    finally:
        store.close()


def expected_state(mesh: LargeMesh, i: int, j: int, n: int) -> str:
    """The state of link i-j from the reports `fill` wrote (topology.link's rule, done by hand)."""
    views = [
        reported_path(src, dst)
        for src, dst in ((i, j), (j, i))
        if src not in mesh.offline and dst in peers_of(src, n, mesh.peers_per_node)
    ]
    if not views:
        return "unknown"
    if any(fresh for _, fresh in views):
        return "relay" if any(path == "relay" for path, _ in views) else "direct"
    return "down"


def expected_counts(mesh: LargeMesh, n: int) -> dict[str, dict[str, int]]:
    """Links by state in all (`total`) and per node name, from the pairs some report names (the others
    are unknown): O(n * peers_per_node), unlike asking `expected_state` of every pair."""
    named = {
        (min(i, j), max(i, j))
        for i in range(n)
        if i not in mesh.offline
        for j in peers_of(i, n, mesh.peers_per_node)
    }
    zero = {"direct": 0, "relay": 0, "down": 0, "unknown": 0}
    total = dict(zero)
    per = {name: dict(zero) for name in mesh.names}
    for i, j in named:
        state = expected_state(mesh, i, j, n)
        total[state] += 1
        per[mesh.names[i]][state] += 1
        per[mesh.names[j]][state] += 1
    total["unknown"] = n * (n - 1) // 2 - len(named)
    for counts in per.values():
        counts["unknown"] = n - 1 - counts["direct"] - counts["relay"] - counts["down"]
    return {"total": total, **per}
