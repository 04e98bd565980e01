"""The mesh in the lab: real agents, real wireguard-go, real pings and TCP across VPCs (issue 3)."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from lab_paths import ping_ok, tcp_transfer

from wgmesh.lab import Lab, Site, WaitTimeout, wait_until
from wgmesh.lab.converge import WgPeer, parse_wg_dump
from wgmesh.lab.pings import ContinuousPing
from wgmesh.lab.timescale import scaled
from wgmesh.lab.tools import program

pytestmark = [pytest.mark.e2e]


def wg_peers(lab: Lab, site: Site) -> tuple[WgPeer, ...]:
    """What `wg show IF dump` lists on a gateway."""
    done = lab.exec(site.node, "wg", "show", site.wg_interface, "dump", check=True)
    return parse_wg_dump(done.stdout)


def wg_routes(lab: Lab, site: Site) -> list[str]:
    """Prefixes routed through the gateway's WireGuard interface, as CIDRs (duplicates kept)."""
    out = lab.exec(site.node, "ip", "-4", "route", "show", "dev", site.wg_interface, check=True).stdout
    prefixes = []
    for line in out.splitlines():
        first = line.split()[0]
        if "proto kernel" in line:  # the overlay network's connected route
            continue
        prefixes.append(str(ipaddress.ip_network(first if "/" in first else f"{first}/32")))
    return prefixes


def nodes(lab: Lab) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in lab.api("GET", "/api/v1/nodes")["nodes"]}


@pytest.mark.lab(sites=3)
def test_three_sites_reach_each_other(lab: Lab) -> None:
    matrix = lab.ping_matrix(count=2)
    assert all(rtt is not None for rtt in matrix.values()), matrix
    s1, s2, s3 = lab.plan.sites
    tcp_transfer(lab, s1, s3)
    tcp_transfer(lab, s3, s2)
    registry = nodes(lab)
    for site in lab.plan.sites:
        peers = {p.public_key: p for p in wg_peers(lab, site)}
        others = [registry[s.node] for s in lab.plan.sites if s.index != site.index]
        assert set(peers) == {n["public_key"] for n in others}
        for other in others:
            allowed = {str(net) for net in peers[other["public_key"]].allowed_ips}
            assert allowed == {f"{other['overlay_ip']}/32", *other["subnets"]}, (site.node, other["name"])
        assert sorted(wg_routes(lab, site)) == sorted(
            p for other in others for p in (f"{other['overlay_ip']}/32", *other["subnets"])
        )


@pytest.mark.lab(sites=3)
def test_new_site_is_everywhere_within_3s(lab: Lab, tmp_path: Path) -> None:
    """Measured from the moment gw4 is in the registry to vm1's first answer from vm4.

    vm1 pings every 100 ms from before the site exists, so the figure is the data plane's and not the
    cadence of a test's ping attempts: retrying `ping -W 2` cost 2.2 s per miss and once read 5.03 s
    for a join that had completed in under one (CI, stop 24).
    """
    added: list[Site] = []
    failure: list[BaseException] = []

    def grow() -> None:
        try:
            added.append(lab.add_site(timeout=60))
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    site4 = lab.plan.with_sites(4).site(4)
    pinger = ContinuousPing(lab, "vm1", site4.vm_ip, tmp_path / "ping.log")
    grower = threading.Thread(target=grow)
    grower.start()
    try:
        wait_until(lambda: "gw4" in nodes(lab), 30, "gw4 to enroll")
        enrolled = time.time()  # the ping log's clock
        key = nodes(lab)["gw4"]["public_key"]

        def everyone_has_it() -> bool:
            return all(key in {p.public_key for p in wg_peers(lab, s)} for s in lab.plan.sites[:3])

        wait_until(everyone_has_it, 10, "every gateway to list gw4")
        listed = time.time() - enrolled
        wait_until(lambda: pinger.replies_since(enrolled) > 0, 10, "vm1 to reach vm4")
        reached = min(t for t in pinger.replies() if t > enrolled) - enrolled
    finally:
        pinger.stop()
        grower.join(90)
    assert not failure, failure
    print(f"gw4 listed everywhere {listed:.2f}s and vm4 answering vm1 {reached:.2f}s after enrolling")
    # The 3 s is a budget on the reference machine; a slower one (the time scale) gets more.
    assert reached < scaled(3.0), f"vm4 answered vm1 {reached:.2f}s after gw4 enrolled"
    assert ping_ok(lab, "vm4", lab.plan.site(2).vm_ip)


@pytest.mark.lab(sites=3)
def test_deleted_node_disappears_within_3s(lab: Lab) -> None:
    s1, s2, s3 = lab.plan.sites
    key = nodes(lab)["gw3"]["public_key"]
    lab.api("DELETE", "/api/v1/nodes/gw3")
    start = time.monotonic()

    def gone() -> bool:
        return all(
            key not in {p.public_key for p in wg_peers(lab, s)} and str(s3.lan) not in wg_routes(lab, s)
            for s in (s1, s2)
        )

    wait_until(gone, 10, "gw3 to disappear from gw1 and gw2")
    took = time.monotonic() - start
    print(f"gw3 gone everywhere {took:.2f}s after the DELETE")
    assert took < scaled(3.0), f"took {took:.2f}s"  # a budget on the reference machine, scaled
    assert not ping_ok(lab, "vm1", s3.vm_ip)
    assert ping_ok(lab, "vm1", s2.vm_ip)


@pytest.mark.lab(sites=2)
def test_data_plane_survives_coordinator_outage(lab: Lab) -> None:
    s1, s2 = lab.plan.sites
    assert lab.kill("hub", signal.SIGKILL)
    assert ping_ok(lab, "vm1", s2.vm_ip, count=3)
    tcp_transfer(lab, s1, s2, size=1 << 20)
    # A restarted agent, with its interface gone (as after a reboot), rebuilds it from the cache alone.
    assert lab.kill("gw1", signal.SIGTERM)
    # SIGTERM leaves the data plane running: interface up, traffic flowing, with no agent at all.
    assert lab.exec("gw1", "ip", "link", "show", s1.wg_interface).returncode == 0
    assert ping_ok(lab, "vm1", s2.vm_ip)
    lab.exec("gw1", program("wgmesh-agent"), "cleanup", "--interface", s1.wg_interface, check=True)
    assert lab.exec("gw1", "ip", "link", "show", s1.wg_interface).returncode != 0
    lab.start("gw1")
    wait_until(lambda: ping_ok(lab, "vm1", s2.vm_ip), 20, "vm1 to reach vm2 with the coordinator down")
    # The coordinator returns: a change made there reaches the agents again.
    lab.start("hub")
    lab.wait_coordinator()
    lab.api("PATCH", "/api/v1/nodes/gw2", {"subnets": [str(s2.lan), "10.77.0.0/24"]})
    wait_until(lambda: "10.77.0.0/24" in wg_routes(lab, s1), 30, "gw1 to resync after the outage")


@pytest.mark.lab(sites=2, timeout=90.0)
def test_agent_killed_mid_apply_converges(lab: Lab) -> None:
    s1, s2 = lab.plan.sites
    statics = 250
    assert lab.kill("gw1", signal.SIGTERM)
    for i in range(statics):
        lab.api(
            "POST",
            "/api/v1/nodes",
            {"name": f"static{i}", "generate_keys": True, "subnets": [f"10.{100 + i // 200}.{i % 200}.0/24"]},
        )
    expected = statics + 1
    lab.start("gw1")
    caught = None

    def part_or_all_applied() -> bool:
        nonlocal caught
        count = (
            len(wg_peers(lab, s1))
            if lab.exec("gw1", "ip", "link", "show", s1.wg_interface).returncode == 0
            else 0
        )
        routes = len(wg_routes(lab, s1)) if count else 0
        if count != 1 and (count < expected or routes < 2 * expected):
            if count > 1 or routes > 2:
                caught = (count, routes)
                return True
            return False
        return count == expected and routes == 2 * expected

    # Polled without a pause, to catch the apply half done. Not an assertion: should the agent not get
    # that far in time, it is killed wherever it is; what is asserted is the convergence after it.
    with contextlib.suppress(WaitTimeout):
        wait_until(part_or_all_applied, 30, "gw1 to apply some or all of its peers", interval=0)
    assert lab.kill("gw1", signal.SIGKILL)
    print(f"agent killed with {caught or 'a complete'} (peers, routes) applied")
    lab.start("gw1")

    def converged() -> bool:
        routes = wg_routes(lab, s1)
        return (
            len(wg_peers(lab, s1)) == expected
            and sorted(set(routes)) == sorted(routes)
            and len(routes) == 2 * expected
        )

    wait_until(converged, 60, "gw1 to converge after the crash")
    keys = [p.public_key for p in wg_peers(lab, s1)]
    assert len(keys) == len(set(keys))
    assert ping_ok(lab, "vm1", s2.vm_ip)


@pytest.mark.lab(sites=3)
def test_route_overlapping_a_local_subnet_is_shadowed(lab: Lab) -> None:
    s1, s2, s3 = lab.plan.sites
    dummy = f"{lab.name}-d0"
    # A veth pair inside gw2 stands in for a local VPC subnet (this kernel has no dummy module).
    lab.exec("gw2", "ip", "link", "add", dummy, "type", "veth", "peer", "name", f"{dummy}p", check=True)
    lab.exec("gw2", "ip", "addr", "add", "10.50.0.1/24", "dev", dummy, check=True)
    lab.exec("gw2", "ip", "link", "set", f"{dummy}p", "up", check=True)
    lab.exec("gw2", "ip", "link", "set", dummy, "up", check=True)
    lab.api("PATCH", "/api/v1/nodes/gw3", {"subnets": [str(s3.lan), "10.50.0.0/24"]})
    wait_until(lambda: "10.50.0.0/24" in wg_routes(lab, s1), 10, "gw1 to install 10.50.0.0/24")

    def reported() -> bool:
        status = lab.api("GET", "/api/v1/nodes/gw2/status")
        return any(
            s["prefix"] == "10.50.0.0/24" and s["interface"] == dummy for s in status["report"]["shadowed"]
        )

    wait_until(reported, 20, "gw2 to report 10.50.0.0/24 as shadowed")
    assert "10.50.0.0/24" not in wg_routes(lab, s2)
    local = lab.exec("gw2", "ip", "-4", "route", "show", "10.50.0.0/24", check=True).stdout
    assert f"dev {dummy}" in local and lab.plan.site(2).wg_interface not in local
    topology = lab.api("GET", "/api/v1/topology")
    assert any("10.50.0.0/24" in w for w in topology["warnings"])
    # The coordinator joins the report to the route: gw2 shadows gw3's 10.50.0.0/24, nobody else does.
    route = next(r for r in topology["routes"] if r["prefix"] == "10.50.0.0/24")
    assert (route["gateway"], route["state"]) == ("gw3", "active")
    assert [(s["node"], s["interface"]) for s in route["shadowed_by"]] == [("gw2", dummy)]
    # The rest of gw3's routes are installed on gw2 as usual.
    assert str(s3.lan) in wg_routes(lab, s2)
