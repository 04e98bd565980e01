"""The agent refuses a netmap route that would swallow its own coordinator, even when the coordinator sends
it (issue 16, agent self-protection): a real lab, and a coordinator that went wrong made the honest way, by
an admin PATCH that gives gw2 the coordinator's underlay /32 (the coordinator accepts it today)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from lab_paths import AGENT, CLI, last_report, ping_ok, run_cli

from wgmesh.lab import Lab, wait_until

pytestmark = [pytest.mark.e2e]


def run(argv: list[str], lab: Lab) -> subprocess.CompletedProcess[str]:
    return run_cli(argv, lab, columns=200)


def routes(lab: Lab, node: str, interface: str) -> str:
    return lab.exec(node, "ip", "-4", "route", "show", "dev", interface, check=True).stdout


def reported_refused(lab: Lab, node: str) -> list[dict[str, Any]]:
    return list(last_report(lab, node).get("refused", []))


@pytest.mark.lab(sites=2)
def test_a_route_covering_the_coordinator_is_refused_reported_and_the_rest_still_forwards(lab: Lab) -> None:
    s1, s2 = lab.plan.sites
    hub = f"{lab.plan.hub_ip}/32"
    wait_until(lambda: ping_ok(lab, s1.host, s2.vm_ip), 30, "vm1 to reach vm2 through the mesh")
    lab.api("PATCH", f"/api/v1/nodes/{s2.node}", {"subnets": [str(s2.lan), hub]})
    assert hub in lab.api("GET", f"/api/v1/nodes/{s2.node}")["subnets"]  # type: ignore[index]

    expected = {"prefix": hub, "gateway": s2.node, "code": "coordinator", "address": str(lab.plan.hub_ip)}
    wait_until(lambda: expected in reported_refused(lab, s1.node), 30, "gw1 to report the refusal")
    # Neither routed nor allowed: the coordinator stays on the underlay, and gw1 keeps reporting through it.
    assert str(lab.plan.hub_ip) not in routes(lab, s1.node, s1.wg_interface)
    assert str(s2.lan) in routes(lab, s1.node, s1.wg_interface)
    allowed = lab.exec(s1.node, "wg", "show", s1.wg_interface, "allowed-ips", check=True).stdout
    assert hub not in allowed and str(s2.lan) in allowed
    got = lab.exec(s1.node, "ip", "-4", "route", "get", str(lab.plan.hub_ip), check=True).stdout
    assert s1.wg_interface not in got
    assert ping_ok(lab, s1.host, s2.vm_ip)  # the rest of gw2's netmap still forwards

    state = lab.plan.state_dir / s1.node
    local = json.loads(run([*AGENT, "status", "--json", "--state-dir", str(state)], lab).stdout)
    assert expected in local["refused"]
    shown = run([*AGENT, "status", "--state-dir", str(state)], lab).stdout
    assert f"{hub} of {s2.node} refused: covers the coordinator's address {lab.plan.hub_ip}" in shown
    warnings = json.loads(run([*CLI, "status", "--json"], lab).stdout)["warnings"]
    assert (
        f"{s1.node} refused route {hub}@{s2.node}: covers the coordinator's address {lab.plan.hub_ip}"
        in warnings
    )

    # The admin undoes it: the refusal clears.
    lab.api("PATCH", f"/api/v1/nodes/{s2.node}", {"subnets": [str(s2.lan)]})
    wait_until(lambda: reported_refused(lab, s1.node) == [], 30, "gw1's refusal to clear")
    assert ping_ok(lab, s1.host, s2.vm_ip)
