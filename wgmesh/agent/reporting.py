"""Pure: whether the agent's next status report goes whole or as a heartbeat.

A report holds one entry per peer. At 1,000 gateways, 1,000 reports of 1,000 peers every 10 s is a
hundred 270 KB documents a second for the coordinator to parse, most of them saying what the last one
said with bigger counters. So the agent sends its report whole when something in it changed that is not
a counter (a path, a peer's health or endpoint, a handshake turning stale, its endpoints, HA, routes) and
at least every `full_every(peers)` seconds for the counters; otherwise a heartbeat that only says it is
alive. Up to 50 peers every report is whole, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from wgmesh.models import PeerStatus, StatusReport

REPORT_INTERVAL = 10.0
"""Seconds between two reports (whole or heartbeat)."""
SECONDS_PER_PEER = 0.2
"""How much later the counters may reach the coordinator, per peer: at 1,000 peers every 200 s, which
keeps a coordinator of 1,000 such gateways at 5 whole reports a second."""
HANDSHAKE_FRESH = timedelta(seconds=180)
"""A handshake older than this makes a link `down` (topology.HANDSHAKE_FRESH): turning stale is a change."""

Kind = Literal["full", "heartbeat"]


def full_every(peers: int) -> float:
    """The longest time between two whole reports of an agent with this many peers."""
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
    times and RTTs (a handshake's freshness counts)."""
    rest = report.model_dump(exclude={"peers"})
    peers = {peer.public_key: peer_state(peer, now) for peer in report.peers}
    return (rest, peers)


@dataclass(frozen=True)
class Sent:
    """The last whole report the coordinator accepted: its state (`state`) and when it went."""

    state: tuple[object, ...]
    at: float


def next_kind(sent: Sent | None, report: StatusReport, now: datetime, clock: float) -> Kind:
    """Whole when nothing was accepted yet, the state moved, or the counters are due; else a heartbeat."""
    if sent is None or clock - sent.at >= full_every(len(report.peers)):
        return "full"
    return "heartbeat" if state(report, now) == sent.state else "full"
