"""Issue 4, e2e 1: a site whose UDP is blocked from the start reaches everyone through the relay.

TCP between site 3's gateway and the others is blocked too: with it open, the pairs would go straight over
TCP (issue 21, tests/e2e/test_path_ladder.py)."""

from __future__ import annotations

import itertools

import pytest
from lab_paths import path_of, paths, ping_ok

from wgmesh.lab import Lab, wait_until

pytestmark = [pytest.mark.e2e]


@pytest.mark.lab(sites=3, block_udp=[3], block_tcp_between=[(1, 3), (2, 3)])
def test_blocked_site_is_relayed_and_the_rest_stay_direct(lab: Lab) -> None:
    sites = lab.plan.sites
    for a, b in itertools.permutations(sites, 2):
        wait_until(lambda a=a, b=b: ping_ok(lab, a.host, b.vm_ip), 20, f"{a.host} reaches {b.host}")

    def settled() -> bool:
        # A report may go out between the decision and WireGuard taking the shim's endpoint (CI run 42
        # read path=relay beside the old direct endpoint), so settling waits for the endpoint as well.
        endpoint = paths(lab, "gw3")["gw1"].endpoint or ""
        return (
            path_of(lab, "gw3", "gw1") == "relay"
            and endpoint.startswith("127.0.0.1:")
            and path_of(lab, "gw3", "gw2") == "relay"
            and path_of(lab, "gw1", "gw3") == "relay"
            and path_of(lab, "gw2", "gw3") == "relay"
            and path_of(lab, "gw1", "gw2") == "direct"
            and path_of(lab, "gw2", "gw1") == "direct"
        )

    seconds = wait_until(settled, 20, "gw3's pairs on relay through the shim, gw1-gw2 direct")
    seen = paths(lab, "gw3")["gw1"]
    print(f"paths settled {seconds:.1f} s after convergence; gw3->gw1: {seen}")
    assert seen.relay == f"{lab.plan.hub_ip}:8443"
    assert seen.reason and ("probes failed" in seen.reason or "handshake" in seen.reason)
    assert seen.endpoint and seen.endpoint.startswith("127.0.0.1:")
    assert paths(lab, "gw1")["gw2"].endpoint == f"{lab.plan.site(2).underlay_ip}:51820"
