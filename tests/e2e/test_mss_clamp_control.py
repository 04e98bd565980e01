"""The control for test_mss_clamp: without the agents' clamp the lab's security groups make TCP stall.

With the agents stopped (the data plane keeps forwarding, as after a `systemctl stop`) and their clamp
chain flushed by hand, the same stream that arrived a moment before stalls with nothing delivered: the
lab reproduces the black hole, so the acceptance test proves the clamp and not a lab that never drops.
Started again, the agents find their table changed and write it back; the stream arrives again.
"""

from __future__ import annotations

import pytest
from lab_paths import tcp_transfer

from wgmesh.agent.ruleset import FAMILY, table_name
from wgmesh.lab import Lab, wait_until

pytestmark = [pytest.mark.e2e]

STREAM = 4 << 20


def clamp_rules(lab: Lab, index: int) -> str:
    site = lab.plan.site(index)
    listing = lab.exec(site.node, "nft", "list", "chain", FAMILY, table_name(site.wg_interface), "mss")
    return listing.stdout


@pytest.mark.lab(sites=2, sg_drop_icmp=[1, 2])
def test_tcp_stalls_without_the_clamp_and_flows_once_the_agents_restore_it(lab: Lab) -> None:
    one, two = lab.plan.site(1), lab.plan.site(2)
    tcp_transfer(lab, one, two, STREAM, 5301, stall=8)  # the clamp in place: intact

    for site in (one, two):
        assert lab.kill(site.node), f"{site.node}'s agent was not running"
        assert "maxseg" in clamp_rules(lab, site.index)  # stopping the agent leaves the data plane
        lab.exec(site.node, "nft", "flush", "chain", FAMILY, table_name(site.wg_interface), "mss", check=True)
    with pytest.raises(AssertionError, match=r"stalled: 0 of"):
        tcp_transfer(lab, one, two, STREAM, 5302, stall=4)

    for site in (one, two):
        lab.start(site.node)
    for site in (one, two):
        wait_until(
            lambda s=site: "maxseg" in clamp_rules(lab, s.index), 30, f"{site.node} to restore its clamp"
        )
    tcp_transfer(lab, one, two, STREAM, 5303, stall=8)
