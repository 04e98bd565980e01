"""Issue 4, e2e 3: a node with P2P off uses the relay although UDP works; `auto` through the API moves
it to direct within 5 s."""

from __future__ import annotations

import pytest
from lab_paths import path_of, paths, ping_ok

from wgmesh.lab import Lab, wait_until

pytestmark = [pytest.mark.e2e]


@pytest.mark.lab(sites=3, p2p_off=[2])
def test_p2p_off_relays_and_auto_goes_direct(lab: Lab) -> None:
    two = lab.plan.site(2)
    wait_until(lambda: ping_ok(lab, "vm1", two.vm_ip), 20, "vm1 reaches vm2")
    wait_until(
        lambda: path_of(lab, "gw1", "gw2") == "relay" and path_of(lab, "gw2", "gw1") == "relay",
        10,
        "gw1-gw2 on the relay",
    )
    assert paths(lab, "gw2")["gw1"].reason == "p2p is off for this pair"
    # P2P off is per node: gw1 and gw3 still talk directly.
    wait_until(lambda: path_of(lab, "gw1", "gw3") == "direct", 10, "gw1-gw3 direct")
    # The relay really carries it: pings keep working with gw2's peers on 127.0.0.1 endpoints. Waited
    # for, not read once: a report is built on the status job's thread and can fall between the path
    # tick's decision and the endpoint's application (its counters are the tick's, up to 0.5 s old); the
    # report after it has the shim's endpoint.
    wait_until(
        lambda: (paths(lab, "gw1")["gw2"].endpoint or "").startswith("127.0.0.1:"),
        15,
        "gw1's report to show gw2 on the shim's 127.0.0.1 endpoint",
    )
    assert ping_ok(lab, "vm1", two.vm_ip)

    lab.set_p2p(2, "auto")
    took = wait_until(
        lambda: path_of(lab, "gw1", "gw2") == "direct" and path_of(lab, "gw2", "gw1") == "direct",
        5,
        "gw1-gw2 direct within 5 s",
    )
    print(f"p2p auto: direct after {took:.2f} s")
    assert paths(lab, "gw1")["gw2"].endpoint == f"{two.underlay_ip}:51820"
    assert ping_ok(lab, "vm1", two.vm_ip)
