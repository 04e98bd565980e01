"""Issue 4, e2e 2: UDP blocked during a ping and a TCP stream moves to the relay within 10 s, back to
direct within 60 s once unblocked, and the TCP stream survives both switches."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lab_paths import TcpStream, both_on, gap_across, path_of

from wgmesh.lab import Lab, wait_until
from wgmesh.lab.pings import ContinuousPing

pytestmark = [pytest.mark.e2e]


@pytest.mark.lab(sites=2, timeout=60)
def test_switches_to_relay_and_back_without_breaking_tcp(lab: Lab, tmp_path: Path) -> None:
    one, two = lab.plan.site(1), lab.plan.site(2)
    wait_until(lambda: path_of(lab, "gw1", "gw2") == "direct", 20, "gw1-gw2 direct")
    ping = ContinuousPing(lab, one.host, two.vm_ip, tmp_path / "ping.log")
    stream = TcpStream(lab, one, two, tmp_path / "stop")
    try:
        wait_until(lambda: len(ping.replies()) >= 10, 10, "the ping running")
        blocked_at = time.time()
        lab.block_tcp(1, 2)  # TCP between the gateways too, so the relay it is (not tcp-direct)
        lab.block_udp(2)
        to_relay = wait_until(lambda: both_on(lab, "gw1", "gw2", "relay"), 15, "both sides on the relay")
        gap = gap_across(ping, blocked_at, to_relay)
        print(f"UDP blocked: both sides on the relay after {to_relay:.1f} s; longest ping gap {gap:.2f} s")
        assert gap < 10, f"traffic stopped for {gap:.1f} s"
        assert stream.alive()

        unblocked_at = time.time()
        lab.unblock_udp(2)
        back = wait_until(lambda: both_on(lab, "gw1", "gw2", "direct"), 60, "both sides direct again")
        settled = time.time()
        wait_until(lambda: ping.replies_since(settled) >= 20, 10, "two more seconds of replies")
        gap_back = ping.longest_gap(since=unblocked_at)
        print(f"UDP unblocked: direct again after {back:.1f} s; longest ping gap {gap_back:.2f} s")
        assert gap_back < 2
        total, _ = stream.finish()
        print(f"TCP stream carried {total / 1e6:.1f} MB intact across both switches")
        assert total > 1e6
    finally:
        ping.stop()
        stream.kill()
