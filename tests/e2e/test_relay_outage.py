"""Issue 4, e2e 5: a relay outage leaves direct pairs alone and relayed pairs recover when it returns; a
coordinator outage leaves relayed traffic flowing (tickets are verified offline)."""

from __future__ import annotations

import signal
import time

import pytest
from lab_paths import path_of, ping_ok

from wgmesh.lab import Lab, wait_until

pytestmark = [pytest.mark.e2e]


@pytest.mark.lab(
    sites=3, block_udp=[3], block_tcp_between=[(1, 3), (2, 3)]
)  # TCP between them too: the relay
def test_relay_and_coordinator_outages(lab: Lab) -> None:
    two, three = lab.plan.site(2), lab.plan.site(3)
    wait_until(lambda: ping_ok(lab, "vm1", three.vm_ip), 20, "vm1 reaches vm3 through the relay")
    wait_until(lambda: path_of(lab, "gw1", "gw3") == "relay", 10, "gw1-gw3 relayed")

    lab.kill("relay", signal.SIGKILL)
    for _ in range(5):
        assert ping_ok(lab, "vm1", two.vm_ip), "a direct pair must not notice the relay going away"
    assert not ping_ok(lab, "vm1", three.vm_ip, count=2)

    lab.start("relay")
    took = wait_until(lambda: ping_ok(lab, "vm1", three.vm_ip, count=1), 30, "relayed pair recovered")
    print(f"relayed pair recovered {took:.1f} s after the relay restarted")

    lab.kill("hub", signal.SIGKILL)
    started = time.monotonic()
    while time.monotonic() - started < 15:
        assert ping_ok(lab, "vm1", three.vm_ip, count=2), "relayed traffic stopped with the coordinator"
        assert ping_ok(lab, "vm3", two.vm_ip, count=1)
    print("relayed traffic flowed for 15 s with the coordinator down")
