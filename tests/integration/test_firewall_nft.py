"""The agent's nftables table written by the real `nft` in a namespace of the test's own."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from netns_harness import remove_namespaces, sh

from wgmesh.lab.timescale import scaled

pytestmark = pytest.mark.e2e

SCRIPT = """
import json, subprocess, sys
from wgmesh.agent.ruleset import FirewallSpec, MssGroup, Translation
from wgmesh.agent.system.firewall import NftFirewall

fw = NftFirewall()
# Adjacent prefixes that do not merge, a default route, an IPv6 host route: nft must give back what we
# wrote, or every reconcile would rewrite the table.
spec = FirewallSpec("wgt0", masquerade=True, clamps=(
    MssGroup(1376, ("0.0.0.0/0",), ("2001:db8:9::1/128",)),
    MssGroup(1380, ("10.0.0.0/24", "10.0.1.0/25", "10.2.0.0/24", "100.96.0.2/32"), ("2001:db8:2::/64",)),
    MssGroup(1420, ("10.3.0.0/24", "100.96.0.3/32")),
))
steps = {"first": fw.ensure(spec), "again": fw.ensure(spec)}
# Someone flushes our clamp chain by hand: the next reconcile writes the table again.
subprocess.run(["nft", "flush", "chain", "inet", "wgmesh_wgt0", "mss"], check=True)
steps["after_flush"] = fw.ensure(spec)
steps["stable"] = fw.ensure(spec)
steps["listing"] = subprocess.run(["nft", "list", "table", "inet", "wgmesh_wgt0"], capture_output=True,
                                  text=True, check=True).stdout
steps["clamp_only"] = fw.ensure(FirewallSpec("wgt0", clamps=spec.clamps))
# An HA member's masquerade into its group's prefixes only (agent/ha.py): written once, then stable.
ha = FirewallSpec("wgt0", clamps=spec.clamps, masquerade_to=MssGroup(0, ("10.2.0.0/24", "10.5.0.0/16"), ("fd00:2::/64",)))
steps["ha_first"], steps["ha_again"] = fw.ensure(ha), fw.ensure(ha)
steps["ha_listing"] = subprocess.run(["nft", "list", "chain", "inet", "wgmesh_wgt0", "postrouting"],
                                     capture_output=True, text=True, check=True).stdout
# A VPC served under an alias (1:1 prefix translation), both families, with the HA masquerade beside it.
nat = FirewallSpec("wgt0", clamps=spec.clamps, masquerade_to=ha.masquerade_to, translations=(
    Translation("10.1.0.0/24", "10.201.0.0/24"), Translation("fd00:1::/64", "fd00:201::/64"),
))
steps["nat_first"], steps["nat_again"] = fw.ensure(nat), fw.ensure(nat)
steps["nat_listing"] = subprocess.run(["nft", "list", "table", "inet", "wgmesh_wgt0"],
                                      capture_output=True, text=True, check=True).stdout
steps["empty"] = fw.ensure(FirewallSpec("wgt0"))
steps["removed_again"] = fw.remove("wgt0")
print(json.dumps(steps))
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    if shutil.which("nft") is None:
        pytest.skip("needs nft")
    ns = f"wgf{secrets.token_hex(3)}"
    sh("ip", "netns", "add", ns)
    try:
        yield ns
    finally:
        remove_namespaces([ns])


def test_table_written_once_repaired_after_drift_and_removed(namespace: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        check=False,
        timeout=scaled(120),
    )
    assert done.returncode == 0, done.stderr
    steps = json.loads(done.stdout)
    assert (steps["first"], steps["again"], steps["after_flush"], steps["stable"]) == (1, 0, 1, 0)
    listing = steps["listing"]
    assert "tcp option maxseg size set 1340" in listing  # IPv4 at 1380
    assert "tcp option maxseg size set 1320" in listing  # IPv6 at 1380
    assert "tcp option maxseg size set 1380" in listing  # IPv4 at 1420
    assert "masquerade" in listing
    assert (steps["clamp_only"], steps["empty"], steps["removed_again"]) == (1, 1, False)
    assert (steps["ha_first"], steps["ha_again"]) == (1, 0)
    assert "ip daddr { 10.2.0.0/24, 10.5.0.0/16 } masquerade" in steps["ha_listing"]
    assert "ip6 daddr fd00:2::/64 masquerade" in steps["ha_listing"]
    assert (steps["nat_first"], steps["nat_again"]) == (1, 0)  # nft gives back what we wrote
    nat = steps["nat_listing"]
    assert "type nat hook prerouting priority dstnat; policy accept;" in nat
    assert 'iifname "wgt0" ip daddr 10.201.0.0/24 dnat ip prefix to 10.1.0.0/24' in nat
    assert 'oifname "wgt0" ip saddr 10.1.0.0/24 snat ip prefix to 10.201.0.0/24' in nat
    assert 'iifname "wgt0" ip6 daddr fd00:201::/64 dnat ip6 prefix to fd00:1::/64' in nat
    assert 'oifname "wgt0" ip6 saddr fd00:1::/64 snat ip6 prefix to fd00:201::/64' in nat
