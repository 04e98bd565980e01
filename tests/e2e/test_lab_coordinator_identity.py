"""A coordinator that comes back with another key (issue 15): every agent refuses it with one clear line and
keeps forwarding on its cached netmap, as through an outage; the pin it keeps does not move."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from lab_paths import ping_ok

from wgmesh.coordinator import identity
from wgmesh.lab import Lab, wait_until
from wgmesh.lab.pings import ContinuousPing
from wgmesh.lab.services import log_path

pytestmark = [pytest.mark.e2e]

REFUSED = "coordinator refused: it is not the pinned identity"


@pytest.mark.lab(sites=2, timeout=120.0)
def test_an_agent_refuses_a_coordinator_with_another_key_and_keeps_forwarding(
    lab: Lab, tmp_path: Path
) -> None:
    one, two = lab.plan.sites
    wait_until(lambda: ping_ok(lab, one.host, two.vm_ip), 30, "vm1 to reach vm2")
    for site in (one, two):  # pinned at enrollment, from the token
        pins = json.loads((lab.plan.state_dir / site.node / "coordinator-pin.json").read_text())
        assert pins == {"pin": lab.pin, "next": None}
    ping = ContinuousPing(lab, one.host, two.vm_ip, tmp_path / "ping.log")
    try:
        assert lab.kill("hub")
        other = identity.generate()
        with sqlite3.connect(lab.plan.state_dir / "coordinator.db") as conn:
            conn.execute("UPDATE registry SET tls_key = ?, tls_cert = ?", (other.key_pem, other.cert_pem))
        switched = time.time()
        lab.start("hub")  # the same database, address and credentials: only the key differs

        def refused(site_node: str) -> bool:
            return REFUSED in log_path(lab.state, site_node).read_text()

        # The follower retries with back-off (at most 30 s) after the outage.
        wait_until(lambda: refused(one.node) and refused(two.node), 75, "both agents to refuse the new key")
        line = next(
            line for line in log_path(lab.state, one.node).read_text().splitlines() if REFUSED in line
        )
        assert f"presented key {other.pin}, not {lab.pin}" in line
        assert "\n" not in line
        # The data plane kept forwarding throughout, and still does.
        refused_at = time.time()
        wait_until(lambda: ping.replies_since(refused_at) >= 5, 10, "replies after the refusal")
        assert ping.longest_gap(since=switched) < 2.0, ping.longest_gap(since=switched)
        assert ping_ok(lab, two.host, one.vm_ip)
    finally:
        ping.stop()
    for site in (one, two):
        pins = json.loads((lab.plan.state_dir / site.node / "coordinator-pin.json").read_text())
        assert pins == {"pin": lab.pin, "next": None}
