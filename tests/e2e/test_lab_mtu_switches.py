"""The lab's cloud-like switches on the real interfaces (issue 13): a jumbo LAN, a 1460-byte underlay, and a
security group on the VPC hosts that swallows ICMP "fragmentation needed", so path MTU discovery from a
VPC host is a black hole. Then teardown leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from lab_paths import ping_ok

from wgmesh.lab import Lab, leftovers, wait_until
from wgmesh.lab.cloud import SG_FAMILY, SG_TABLE
from wgmesh.lab.system import namespaces
from wgmesh.lab.timescale import scaled

pytestmark = [pytest.mark.e2e]

CLI = [sys.executable, "-c", "from wgmesh.cli.main import main; main()"]
FRAG_NEEDED = re.compile(r"Frag needed and DF set \(mtu = (\d+)\)")


def wgmesh(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the `wgmesh` CLI of this environment."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=scaled(60), check=False)


def mtus(lab: Lab, node: str) -> dict[str, int]:
    """Each link's MTU on `node` (`hub`: the root namespace), from `ip -j link`."""
    out = lab.exec(node, "ip", "-j", "link", "show", check=True).stdout
    return {link["ifname"]: int(link["mtu"]) for link in json.loads(out)}


def sg_drops(lab: Lab, node: str) -> int:
    """Packets the VPC host's security group has dropped (its rules' counters), or -1 with no table."""
    done = lab.exec(node, "nft", "-j", "list", "table", SG_FAMILY, SG_TABLE)
    if done.returncode != 0:
        return -1
    rules = [item["rule"] for item in json.loads(done.stdout)["nftables"] if "rule" in item]
    return sum(e["counter"]["packets"] for r in rules for e in r["expr"] if "counter" in e)


def df_ping(
    lab: Lab, node: str, dst: object, size: int, *, answered: bool
) -> subprocess.CompletedProcess[str]:
    """One ping of `size` bytes with Don't Fragment set (`-M do`). `answered`: an answer (reply or error) is
    expected, so the wait for it grows with the time scale; otherwise a second of silence is enough."""
    wait = max(1, round(scaled(2))) if answered else 1
    return lab.exec(node, "ping", "-n", "-M", "do", "-s", str(size), "-c", "1", "-W", str(wait), str(dst))


@pytest.mark.lab(sites=2, lan_mtu={1: 9001}, underlay_mtu={2: 1460}, sg_drop_icmp=[1, 2])
def test_mtu_and_security_group_switches_act_on_the_real_links(lab: Lab) -> None:
    one, two = lab.plan.sites
    # The MTUs, where the switches put them and nowhere else.
    gw1, vm1, gw2, vm2 = (mtus(lab, n) for n in ("gw1", "vm1", "gw2", "vm2"))
    assert (gw1["lan"], vm1["eth0"], gw1["eth0"]) == (9001, 9001, 1500)
    assert (gw2["eth0"], gw2["lan"], vm2["eth0"]) == (1460, 1500, 1500)
    root = mtus(lab, "hub")
    assert (root[two.uplink], root[one.uplink]) == (1460, 1500)
    # The 1460-byte underlay for real: gw2 cannot send more, and more does not reach it.
    assert df_ping(lab, "gw2", one.underlay_ip, 1460 - 28, answered=True).returncode == 0
    too_big = df_ping(lab, "gw2", one.underlay_ip, 1460 - 27, answered=False)
    assert "message too long, mtu=1460" in too_big.stdout + too_big.stderr
    assert df_ping(lab, "gw1", two.underlay_ip, 1500 - 28, answered=False).returncode != 0
    assert df_ping(lab, "gw1", two.underlay_ip, 1460 - 28, answered=True).returncode == 0

    # The security group: the table is there on both VPC hosts...
    for node in ("vm1", "vm2"):
        rules = lab.exec(node, "nft", "list", "table", SG_FAMILY, SG_TABLE, check=True).stdout
        assert 'iifname "eth0" icmp type destination-unreachable counter' in rules
        assert "icmpv6 type { destination-unreachable, packet-too-big }" in rules
    # ...and it works: vm1 sends 8 KB with DF toward vm2 over the mesh, gw1 answers "fragmentation
    # needed" (its tunnel is smaller), and vm1 never hears it: no error from ping, no path MTU learnt,
    # one more packet on the drop counter.
    assert ping_ok(lab, "vm1", two.vm_ip)
    before = sg_drops(lab, "vm1")
    big = df_ping(lab, "vm1", two.vm_ip, 8000, answered=False)
    assert big.returncode != 0 and not FRAG_NEEDED.search(big.stdout + big.stderr), big.stdout
    wait_until(lambda: sg_drops(lab, "vm1") > before, 5, "vm1's security group to count the drop")
    assert "mtu" not in lab.exec("vm1", "ip", "route", "get", str(two.vm_ip), check=True).stdout

    status = wgmesh("lab", "status", "--name", lab.name)
    assert status.returncode == 0, status.stderr
    for line in (
        "switch: gw2: underlay MTU 1460",
        "switch: vm1: LAN MTU 9001",
        "switch: vm1: inbound ICMP unreachable dropped",
        "switch: vm2: inbound ICMP unreachable dropped",
    ):
        assert line in status.stdout, status.stdout

    # At run time: allowed again, the same ping gets its answer (the MTU is gw1's tunnel's).
    done = wgmesh("lab", "sg-allow-icmp", "1", "--name", lab.name)
    assert done.returncode == 0, done.stderr
    assert sg_drops(lab, "vm1") == -1
    answered = FRAG_NEEDED.search(df_ping(lab, "vm1", two.vm_ip, 8000, answered=True).stdout)
    assert answered is not None
    assert int(answered.group(1)) == mtus(lab, "gw1")[one.wg_interface]
    done = wgmesh("lab", "lan-mtu", "1", "1500", "--name", lab.name)
    assert done.returncode == 0, done.stderr
    assert (mtus(lab, "gw1")["lan"], mtus(lab, "vm1")["eth0"]) == (1500, 1500)
    lab.refresh()
    assert (lab.state.lan_mtu, lab.state.underlay_mtu, lab.state.sg_drop_icmp) == ({}, {2: 1460}, [2])
    shown = lab.status()
    assert (shown.lan_mtu, shown.underlay_mtu, shown.sg_drop_icmp) == ({}, {2: 1460}, [2])

    # Teardown: nothing of the lab is left (the tables and MTUs went with its namespaces and links).
    lab.down()
    assert not leftovers(lab.name).any(), leftovers(lab.name).describe()
    assert not [n for n in namespaces() if n.startswith(f"{lab.name}-")]
