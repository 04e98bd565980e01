"""Issue 18, the lab side: `--ha-site 2` puts a second gateway gw2b on site 2's LAN, advertising the same
prefix in the same site. It enrolls, its route is approved by the lab as an admin would and stands by for
gw2's, the mesh counts it as a peer, vm1 reaches vm2, and a gateway killed "as when its machine dies"
loses its WireGuard interface too. The failover itself is tested elsewhere."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from lab_paths import ping_ok

from wgmesh.lab import Lab, leftovers, system

pytestmark = [pytest.mark.e2e]


def route_of(lab: Lab, node: str, prefix: str) -> dict[str, Any]:
    routes = lab.api("GET", "/api/v1/routes")["routes"]
    return next(r for r in routes if r["gateway"] == node and r["prefix"] == prefix)


@pytest.mark.lab(sites=2, ha_sites=[2])
def test_an_ha_site_has_a_standby_gateway_and_down_leaves_nothing(lab: Lab) -> None:
    site = lab.plan.site(2)
    second = site.second
    assert second is not None
    lan = str(site.lan)
    # gw2b enrolled; the lab approved its claim, which stands by for gw2's
    gw2, gw2b = route_of(lab, "gw2", lan), route_of(lab, "gw2b", lan)
    assert (gw2["state"], gw2b["state"]) == ("active", "standby"), (gw2, gw2b)
    assert gw2b["decided_by"] not in (None, "token", "network"), gw2b
    # the mesh counts it: every gateway lists the two others, with handshakes
    assert lab.verdict().summary == "peers 6/6, handshakes 6/6"
    # the VPC host's route to the mesh (the "cloud route table") goes via gw2; vm1 reaches vm2
    assert lab.vpc_route(2) == site.gateway.lan_ip
    assert ping_ok(lab, "vm1", site.vm_ip)
    assert ping_ok(lab, "vm2", lab.plan.site(1).vm_ip)
    # a machine's death: the agent killed and its interface gone, wireguard-go with it
    assert lab.kill("gw2b", signal.SIGKILL, remove_interface=True)
    assert lab.exec("gw2b", "ip", "link", "show", "dev", second.wg_interface).returncode != 0
    assert system.netns_pids(second.netns) == []
    lab.start("gw2b")
    lab.wait_converged(30)
    sites = {n["name"]: n.get("site") for n in lab.api("GET", "/api/v1/nodes")["nodes"]}
    lab.down()
    found = leftovers(lab.name)
    assert not found.any(), found.describe()
    # both gateways declare site vpc2 (the agent's --site)
    assert (sites["gw2"], sites["gw2b"], sites["gw1"]) == ("vpc2", "vpc2", "vpc1"), sites
