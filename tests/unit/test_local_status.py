"""The agent's local status socket: one JSON document per connection, 0600, clear error when absent."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wgmesh.agent.local_status import AgentNotRunning, LocalStatusServer, read_local_status
from wgmesh.cli.local import show_local_status
from wgmesh.models import HaStatus, LocalStatus, PeerView, RefusedRoute


def _status(version: int) -> LocalStatus:
    return LocalStatus(
        name="gw1",
        node_id=1,
        overlay_ip="100.96.0.1",
        eth0_ip="198.18.0.11",
        p2p="auto",
        subnets=["10.1.0.0/24"],
        interface="wgt0",
        coordinator="http://198.18.0.1:8080",
        coordinator_reachable=False,
        netmap_version=version,
        peers=[PeerView(name="gw2", overlay_ip="100.96.0.2", path="direct", rx_bytes=10, tx_bytes=20)],
        shadowed=[],
    )


def test_round_trip_and_mode(tmp_path: Path) -> None:
    versions = iter(range(1, 100))
    path = tmp_path / "agent.sock"
    path.write_text("stale")  # a leftover from a crash is replaced
    server = LocalStatusServer(path, lambda: _status(next(versions)))
    server.start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        first, second = read_local_status(path), read_local_status(path)
        assert first == _status(1)
        assert second.netmap_version == 2  # each read is fresh
    finally:
        server.stop()
    assert not path.exists()


def test_no_agent(tmp_path: Path) -> None:
    with pytest.raises(AgentNotRunning, match="no agent is running"):
        read_local_status(tmp_path / "agent.sock")


def test_refused_routes_show_in_the_local_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused = RefusedRoute(prefix="198.18.0.1/32", gateway="gw2", code="coordinator", address="198.18.0.1")
    status = _status(1).model_copy(update={"refused": [refused]})
    path = tmp_path / "agent.sock"
    server = LocalStatusServer(path, lambda: status)
    server.start()
    try:
        read = read_local_status(path)
    finally:
        server.stop()
    assert read.refused == [refused]
    show_local_status(read, as_json=False)
    assert (
        "198.18.0.1/32 of gw2 refused: covers the coordinator's address 198.18.0.1" in capsys.readouterr().out
    )


def test_ha_groups_show_in_the_local_status(capsys: pytest.CaptureFixture[str]) -> None:
    moved = datetime.now(UTC) - timedelta(seconds=12)
    status = _status(1).model_copy(
        update={
            "site": "vpc1",
            "ha": [
                HaStatus(
                    prefix="10.2.0.0/24",
                    holder="gw2b",
                    code="holder_down",
                    reason="gw2 answers no probe: gw2b is the first member that does",
                    changed_at=moved,
                    moved_from="gw2",
                ),
                HaStatus(
                    prefix="10.1.0.0/24", holder="gw1", code="primary", reason="gw1 is the group's primary"
                ),
            ],
        }
    )
    show_local_status(status, as_json=False)
    out = " ".join(capsys.readouterr().out.split())
    assert "ha 10.2.0.0/24 (site vpc1): sent to gw2b [holder_down] gw2 answers no probe" in out
    assert "moved from gw2 12s ago" in out
    assert "ha 10.1.0.0/24 (site vpc1): this gateway carries it [primary]" in out
