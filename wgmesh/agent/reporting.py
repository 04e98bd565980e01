"""Pure: whether the agent's next status report goes whole or as a heartbeat, and what a whole one lists.

A report holds one entry per peer. At 1,000 gateways, 1,000 reports of 1,000 peers every 10 s is a
hundred 270 KB documents a second for the coordinator to parse, most of them saying what the last one
said with bigger counters. So the agent sends its report whole when something in it changed that is not
a counter (a path, a peer's health or endpoint, a handshake turning stale, its endpoints, HA, routes) and
at least every `full_every(peers)` seconds for the counters; otherwise a heartbeat that only says it is
alive. Up to 50 peers every report is whole, as before.

Above 50 peers a whole report lists only the peers with something to say (`condense`): the others, direct
and healthy, go as ranges of node ids with their counters summed. At 5,000 gateways a report of every
peer was 1 MB, and the fleet's first round of them 5 GB for one coordinator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from wgmesh.models import NominalPeers, PeerStatus, StatusReport
from wgmesh.values import NodeId

REPORT_INTERVAL = 10.0
"""Seconds between two reports (whole or heartbeat)."""
SECONDS_PER_PEER = 0.2
"""How much later the counters may reach the coordinator, per peer: at 1,000 peers every 200 s, which
keeps a coordinator of 1,000 such gateways at 5 whole reports a second."""
HANDSHAKE_FRESH = timedelta(seconds=180)
"""A handshake older than this makes a link `down` (topology.HANDSHAKE_FRESH): turning stale is a change."""

Kind = Literal["full", "heartbeat"]


WHOLE_UP_TO = 50
"""Up to this many peers every report goes whole, as before heartbeats: a few KB each."""


def full_every(peers: int) -> float:
    """The longest time between two whole reports of an agent with this many peers (0: every one)."""
    if peers <= WHOLE_UP_TO:
        return 0.0
    return max(REPORT_INTERVAL, SECONDS_PER_PEER * peers)


@dataclass(frozen=True)
class PeerState:
    """What of a peer entry is a change when it moves (counters, handshake times and RTTs are not)."""

    path: str | None
    health: str | None
    endpoint: str | None
    relay: str | None
    reason: str | None
    fresh: bool


def peer_state(peer: PeerStatus, now: datetime) -> PeerState:
    """The state of one peer entry at `now`."""
    fresh = peer.last_handshake is not None and now - peer.last_handshake < HANDSHAKE_FRESH
    return PeerState(peer.path, peer.health, peer.endpoint, peer.relay, peer.reason, fresh)


def state(report: StatusReport, now: datetime) -> tuple[object, ...]:
    """Everything in a report that is a change when it moves: all but the peers' counters, handshake
    times and RTTs (a handshake's freshness counts) and the netmap version."""
    # Not the netmap version either: every change moves it, and a thousand agents sending their whole
    # report after each change is what heartbeats are for avoiding (a heartbeat carries it).
    rest = report.model_dump(exclude={"peers", "netmap_version", "nominal"})
    peers = {peer.public_key: peer_state(peer, now) for peer in report.peers}
    nominal = report.nominal
    return (rest, peers, tuple(nominal.ranges) if nominal else None, nominal.count if nominal else None)


def peer_count(report: StatusReport) -> int:
    """The peers a report speaks of, listed or nominal."""
    return len(report.peers) + (report.nominal.count if report.nominal else 0)


def is_nominal(peer: PeerStatus, now: datetime) -> bool:
    """Nothing to say about this peer but its counters: direct, answering, a fresh handshake."""
    # `health` must say "up": a peer not probed (a static one, or before the first probe) is listed.
    return (
        peer.path == "direct"
        and peer.relay is None
        and peer.health == "up"
        and peer.last_handshake is not None
        and now - peer.last_handshake < HANDSHAKE_FRESH
    )


def condense(report: StatusReport, node_ids: Mapping[str, NodeId], now: datetime) -> StatusReport:
    """The report as it goes to the coordinator: whole up to `WHOLE_UP_TO` peers; above, the nominal
    peers (`is_nominal`, and in the netmap: `node_ids` by public key) as ranges of node ids with their
    counters summed, the others listed. A healthy mesh of 5,000 is then a report of a few hundred bytes
    instead of 1 MB, and a round of first reports O(n) instead of O(n²)."""
    if len(report.peers) <= WHOLE_UP_TO:
        return report
    nominal: dict[NodeId, PeerStatus] = {}
    listed: list[PeerStatus] = []
    for peer in report.peers:
        node_id = node_ids.get(peer.public_key)
        if node_id is not None and is_nominal(peer, now):
            nominal[node_id] = peer
        else:
            listed.append(peer)
    # A range runs over the netmap's peers in id order while they are nominal; ids between that are no
    # peer of this netmap (deleted nodes, this node) do not break it, a peer that is not nominal does.
    if not nominal:
        return report
    ranges: list[tuple[NodeId, NodeId]] = []
    run: tuple[NodeId, NodeId] | None = None
    for node_id in sorted(node_ids.values()):
        if node_id in nominal:
            run = (run[0], node_id) if run else (node_id, node_id)
        elif run:
            ranges.append(run)
            run = None
    if run:
        ranges.append(run)
    handshakes = [p.last_handshake for p in nominal.values() if p.last_handshake is not None]
    summary = NominalPeers(
        ranges=ranges,
        count=len(nominal),
        oldest_handshake=min(handshakes) if handshakes else None,
        rx_bytes=sum(p.rx_bytes for p in nominal.values()),
        tx_bytes=sum(p.tx_bytes for p in nominal.values()),
    )
    return report.model_copy(update={"peers": listed, "nominal": summary})


@dataclass(frozen=True)
class Sent:
    """The last whole report the coordinator accepted: its state (`state`) and when it went."""

    state: tuple[object, ...]
    at: float


def next_kind(sent: Sent | None, report: StatusReport, now: datetime, clock: float) -> Kind:
    """Whole when nothing was accepted yet, the state moved, or the counters are due; else a heartbeat."""
    if sent is None or clock - sent.at >= full_every(peer_count(report)):
        return "full"
    return "heartbeat" if state(report, now) == sent.state else "full"
