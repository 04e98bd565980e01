"""wgmesh.agent.reporting: a status report goes whole when its state moved or its counters are due, else
as a heartbeat."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wgmesh import keys
from wgmesh.agent.reporting import REPORT_INTERVAL, Sent, full_every, next_kind, state
from wgmesh.models import PeerStatus, StatusReport

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEYS = [keys.generate_keypair().public_key for _ in range(3)]


def peer(i: int, **fields: Any) -> PeerStatus:
    base: dict[str, Any] = {
        "public_key": KEYS[i],
        "rx_bytes": 100,
        "tx_bytes": 200,
        "last_handshake": NOW - timedelta(seconds=30),
        "endpoint": f"198.18.{i}.10:51820",
        "path": "direct",
        "rtt_ms": 1.5,
        "reason": "direct: answered",
        "health": "up",
    }
    return PeerStatus.model_validate({**base, **fields})


def report(*peers: PeerStatus, **fields: Any) -> StatusReport:
    return StatusReport.model_validate({"endpoints": ["198.18.0.10:51820"], "peers": list(peers), **fields})


BASE = report(peer(0), peer(1))
SENT = Sent(state(BASE, NOW), at=100.0)


def test_nothing_sent_yet_goes_whole() -> None:
    assert next_kind(None, BASE, NOW, 100.0) == "full"


def test_only_counters_handshake_times_and_rtts_moved_is_a_heartbeat() -> None:
    later = report(
        peer(0, rx_bytes=10**9, tx_bytes=10**9, rtt_ms=9.0, last_handshake=NOW - timedelta(seconds=5)),
        peer(1, rx_bytes=5000),
    )
    assert next_kind(SENT, later, NOW + timedelta(seconds=10), 105.0) == "heartbeat"


@pytest.mark.parametrize(
    "later",
    [
        report(peer(0, path="relay"), peer(1)),
        report(peer(0, health="down"), peer(1)),
        report(peer(0, endpoint="198.18.9.9:51820"), peer(1)),
        report(peer(0, reason="relay: udp blocked"), peer(1)),
        report(peer(0)),  # a peer gone
        report(peer(0), peer(1), peer(2)),  # a peer added
        report(peer(0), peer(1), endpoints=["198.18.0.11:51820"]),
        report(peer(0), peer(1), mtu=1380),
    ],
)
def test_a_change_of_state_goes_whole(later: StatusReport) -> None:
    assert next_kind(SENT, later, NOW + timedelta(seconds=10), 105.0) == "full"


def test_a_handshake_turning_stale_goes_whole() -> None:
    # 30 s old when sent; 190 s old now: the link is down, which the coordinator must hear at once.
    assert next_kind(SENT, BASE, NOW + timedelta(seconds=160), 105.0) == "full"
    assert next_kind(SENT, BASE, NOW + timedelta(seconds=140), 105.0) == "heartbeat"


def test_counters_go_whole_at_least_every_full_every() -> None:
    due = full_every(len(BASE.peers))
    assert due == REPORT_INTERVAL  # a small mesh reports whole every time, as before
    assert next_kind(SENT, BASE, NOW, 100.0 + due) == "full"
    assert next_kind(SENT, BASE, NOW, 100.0 + due - 0.1) == "heartbeat"


def test_the_counters_period_grows_with_the_peers() -> None:
    assert full_every(50) == REPORT_INTERVAL
    assert full_every(1000) == 200.0
    assert full_every(5000) == 1000.0
