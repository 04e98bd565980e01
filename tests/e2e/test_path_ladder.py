"""Issue 21: the path ladder end to end. UDP blocked at a site with TCP between the gateways open lands on
TCP straight between them (`tcp-direct`, no relay); that TCP blocked too lands on the relay; UDP back
returns to direct UDP. A ping and a TCP stream run through all of it: gaps printed, the stream intact."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lab_paths import TcpStream, both_on, gap_across, path_of, paths

from wgmesh.agent.local_status import SOCKET_NAME, read_local_status
from wgmesh.lab import Lab, wait_until
from wgmesh.lab.pings import ContinuousPing
from wgmesh.lab.timescale import scaled

pytestmark = [pytest.mark.e2e]


def host_of(endpoint: str | None) -> str:
    return (endpoint or "").rpartition(":")[0]


@pytest.mark.lab(sites=2, timeout=60)
def test_udp_blocked_goes_tcp_direct_then_relay_then_back_to_udp(lab: Lab, tmp_path: Path) -> None:
    one, two = lab.plan.site(1), lab.plan.site(2)
    wait_until(lambda: both_on(lab, "gw1", "gw2", "direct"), 20, "gw1-gw2 direct")
    ping = ContinuousPing(lab, one.host, two.vm_ip, tmp_path / "ping.log")
    stream = TcpStream(lab, one, two, tmp_path / "stop")
    try:
        wait_until(lambda: len(ping.replies()) >= 10, 10, "the ping running")

        # Rung 2: UDP blocked at site 2, TCP between the gateways open.
        blocked_at = time.time()
        lab.block_udp(2)
        to_tcp = wait_until(lambda: both_on(lab, "gw1", "gw2", "tcp-direct"), 20, "both sides on tcp-direct")
        gap = gap_across(ping, blocked_at, to_tcp)
        seen = paths(lab, "gw1")["gw2"]
        print(f"UDP blocked: tcp-direct after {to_tcp:.1f} s; longest ping gap {gap:.2f} s; gw1->gw2: {seen}")
        assert gap < scaled(10), f"traffic stopped for {gap:.1f} s"
        # Straight to the other gateway's underlay address, no relay named.
        assert host_of(seen.endpoint) == str(two.underlay_ip), seen
        assert host_of(paths(lab, "gw2")["gw1"].endpoint) == str(one.underlay_ip)
        assert seen.relay is None
        assert seen.reason and "TCP straight to the peer works" in seen.reason
        # The agent says where it listens, and its pin is the one gw1's netmap holds for it.
        listener = read_local_status(lab.plan.state_dir / "gw2" / SOCKET_NAME).tcp
        assert listener is not None and listener.port == 51820
        assert lab.api("GET", "/api/v1/nodes/gw2")["tcp"] == listener.model_dump()
        assert stream.alive()

        # Rung 3: TCP between the two gateways blocked too.
        cut_at = time.time()
        lab.block_tcp(1, 2)
        to_relay = wait_until(lambda: both_on(lab, "gw1", "gw2", "relay"), 20, "both sides on the relay")
        gap_relay = gap_across(ping, cut_at, to_relay)
        seen = paths(lab, "gw1")["gw2"]
        print(
            f"TCP blocked too: relay after {to_relay:.1f} s; longest ping gap {gap_relay:.2f} s; gw1->gw2: {seen}"
        )
        assert gap_relay < scaled(10), f"traffic stopped for {gap_relay:.1f} s"
        assert seen.relay == f"{lab.plan.hub_ip}:8443"
        assert stream.alive()

        # Back to rung 1: UDP unblocked (TCP between the gateways still blocked).
        unblocked_at = time.time()
        lab.unblock_udp(2)
        back = wait_until(lambda: both_on(lab, "gw1", "gw2", "direct"), 60, "both sides direct again")
        settled = time.time()
        wait_until(lambda: ping.replies_since(settled) >= 20, 10, "two more seconds of replies")
        gap_back = ping.longest_gap(since=unblocked_at)
        print(f"UDP unblocked: direct again after {back:.1f} s; longest ping gap {gap_back:.2f} s")
        assert gap_back < scaled(2)
        assert path_of(lab, "gw1", "gw2") == "direct"
        total, _ = stream.finish()
        print(f"TCP stream carried {total / 1e6:.1f} MB intact across the three switches")
        assert total > 1e6
    finally:
        ping.stop()
        stream.kill()
