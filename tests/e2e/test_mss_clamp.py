"""Issue 13's acceptance test: TCP between VPCs must not stall in a real cloud.

A cloud security group drops ICMP "fragmentation needed" by default, so a VPC host never learns that the
tunnel is smaller than its LAN: its full-size segments vanish at its gateway and the TCP stream stalls.
The agent must clamp the MSS of TCP crossing the tunnel and size the tunnel to fit the underlay. Here:
with `--sg-drop-icmp` on both sites, an 8 MiB stream between VPC hosts arrives intact (byte count and
digest) at LAN MTU 1500 and 9001, direct and relayed; with site 2's underlay at 1460, the same on the
direct path, both ways, and the agent reports the MTU it chose (status report and `wgmesh-agent status`),
which is what its WireGuard interface has.

Each class shares one lab (`shared_lab`) and sets what differs between cases with the lab's runtime
switches (`Lab.set_lan_mtu`, `Lab.block_udp`), in an order that needs one path switch only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from lab_paths import both_on, tcp_transfer

from wgmesh.errors import WgmeshError
from wgmesh.lab import Lab, wait_until
from wgmesh.lab.timescale import scaled
from wgmesh.lab.tools import relay_available

pytestmark = [pytest.mark.e2e]

AGENT = [sys.executable, "-c", "from wgmesh.agent.main import main; main()"]
STREAM = 8 << 20
# A healthy stream of 8 MiB takes a second or two even on the relay; a black hole never recovers, so a
# few seconds without a byte is a stall (and keeps a failing run short).
TIMEOUT = 60.0
STALL = 8.0
# The most a WireGuard tunnel over a 1460-byte IPv4 underlay can carry (60 bytes of IPv4, UDP and WireGuard).
UNDERLAY_1460_MAX_TUNNEL = 1460 - 60


def stream(lab: Lab, src: int, dst: int, port: int, what: str) -> None:
    """The 8 MiB stream from VPC host `src` to `dst`, intact or failed with how much arrived."""
    took = tcp_transfer(
        lab, lab.plan.site(src), lab.plan.site(dst), STREAM, port, timeout=TIMEOUT, stall=STALL
    )
    print(
        f"{what}: vm{src} -> vm{dst}, {STREAM >> 20} MiB intact in {took:.2f} s ({STREAM * 8 / took / 1e6:.0f} Mbit/s)"
    )


def set_lan_mtu(lab: Lab, mtu: int) -> None:
    for site in lab.plan.sites:
        lab.set_lan_mtu(site.index, mtu)


def take_path(lab: Lab, path: str) -> None:
    """Put gw1-gw2 on `path`: UDP blocked at gw2 and TCP between them forces the relay, unblocked lets
    them go direct."""
    if path == "relay":
        lab.block_tcp(1, 2)
        lab.block_udp(2)
        wait_until(lambda: both_on(lab, "gw1", "gw2", "relay"), 20, "gw1-gw2 on the relay")
    else:
        lab.unblock_udp(2)
        lab.unblock_tcp(1, 2)
        wait_until(lambda: both_on(lab, "gw1", "gw2", "direct"), 60, "gw1-gw2 direct")


needs_relay = pytest.mark.skipif(not relay_available(), reason="wgmesh-relay is not installed")


@pytest.mark.lab(sites=2, sg_drop_icmp=[1, 2])
class TestSecurityGroupsDropIcmp:
    """Both VPC hosts behind a security group that drops ICMP unreachables; the underlay is 1500."""

    # Direct cases first, then one switch to the relay for the rest.
    @pytest.mark.parametrize(
        ("path", "lan_mtu", "port"),
        [
            pytest.param("direct", 1500, 5311, id="direct-lan1500"),
            pytest.param("direct", 9001, 5312, id="direct-lan9001"),
            pytest.param("relay", 9001, 5313, id="relay-lan9001", marks=needs_relay),
            pytest.param("relay", 1500, 5314, id="relay-lan1500", marks=needs_relay),
        ],
    )
    def test_stream_arrives_intact(self, shared_lab: Lab, path: str, lan_mtu: int, port: int) -> None:
        lab = shared_lab
        set_lan_mtu(lab, lan_mtu)
        take_path(lab, path)
        stream(lab, 1, 2, port, f"{path}, LAN MTU {lan_mtu}, ICMP dropped")


def reported_mtu(lab: Lab, node: str) -> int:
    """The tunnel MTU in `node`'s latest status report (AssertionError until there is one)."""
    try:
        answer: dict[str, Any] = lab.api("GET", f"/api/v1/nodes/{node}/status")
    except WgmeshError as exc:  # 404 until the node's first report arrives
        raise AssertionError(f"{node}: {exc.message}") from exc
    report: dict[str, Any] | None = answer.get("report")
    if report is None:
        raise AssertionError(f"{node} has sent no status report yet")
    if "mtu" not in report:
        pytest.fail(
            f"{node}'s status report has no `mtu` field: the agent does not report the tunnel MTU it "
            f"chose (report fields: {', '.join(sorted(report))})"
        )
    if report["mtu"] is None:
        raise AssertionError(f"{node} reports no MTU yet")
    return int(report["mtu"])


@pytest.mark.lab(sites=2, underlay_mtu={2: 1460}, sg_drop_icmp=[1, 2])
class TestUnderlay1460:
    """Site 2's underlay is 1460 (as GCP's default VPC), site 1's is 1500; ICMP unreachables dropped at
    both VPC hosts."""

    def test_agent_reports_the_mtu_it_chose(self, shared_lab: Lab) -> None:
        lab = shared_lab
        site = lab.plan.site(2)
        mtu = 0

        def reported() -> bool:
            nonlocal mtu
            mtu = reported_mtu(lab, site.node)
            return True

        # A report comes at least every 10 s (and soon after each apply): the budget covers a few.
        wait_until(reported, 30, f"{site.node} to report its tunnel MTU")
        link = json.loads(
            lab.exec(site.node, "ip", "-j", "link", "show", site.wg_interface, check=True).stdout
        )
        print(
            f"{site.node} (underlay 1460) reports tunnel MTU {mtu}; {site.wg_interface} has {link[0]['mtu']}"
        )
        assert mtu <= UNDERLAY_1460_MAX_TUNNEL, f"{site.node} chose {mtu}, too big for a 1460-byte underlay"
        assert link[0]["mtu"] == mtu, f"{site.wg_interface} has MTU {link[0]['mtu']}, the report says {mtu}"
        local = subprocess.run(
            [*AGENT, "status", "--json", "--state-dir", str(lab.plan.state_dir / site.node)],
            capture_output=True,
            text=True,
            timeout=scaled(30),
            check=False,
        )
        assert local.returncode == 0, local.stderr
        assert json.loads(local.stdout).get("mtu") == mtu, "`wgmesh-agent status` does not show the same MTU"

    # Both ways: toward site 2 the limit is site 2's underlay, which site 1's tunnel MTU does not know.
    @pytest.mark.parametrize(
        ("lan_mtu", "src", "dst", "port"),
        [
            pytest.param(1500, 1, 2, 5321, id="lan1500-vm1-to-vm2"),
            pytest.param(1500, 2, 1, 5322, id="lan1500-vm2-to-vm1"),
            pytest.param(9001, 1, 2, 5323, id="lan9001-vm1-to-vm2"),
            pytest.param(9001, 2, 1, 5324, id="lan9001-vm2-to-vm1"),
        ],
    )
    def test_stream_arrives_intact_on_the_direct_path(
        self, shared_lab: Lab, lan_mtu: int, src: int, dst: int, port: int
    ) -> None:
        lab = shared_lab
        set_lan_mtu(lab, lan_mtu)
        wait_until(lambda: both_on(lab, "gw1", "gw2", "direct"), 20, "gw1-gw2 direct")
        stream(lab, src, dst, port, f"direct, underlay 1460 at site 2, LAN MTU {lan_mtu}, ICMP dropped")
