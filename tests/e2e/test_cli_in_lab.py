"""The operator CLI against a running lab: the topology listing with real paths, the agent's local view
while the coordinator is down, and an exported static peer loaded into a real interface (issue 5)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from lab_paths import AGENT, CLI, run_cli

from wgmesh.lab import Lab, wait_until

pytestmark = [pytest.mark.e2e]


@pytest.mark.lab(sites=3)
def test_status_lists_every_node_with_direct_paths(lab: Lab) -> None:
    def reported() -> bool:
        done = run_cli([*CLI, "status", "--json"], lab)
        assert done.returncode == 0, done.stderr
        nodes = json.loads(done.stdout)["nodes"]
        # A path is chosen before the first handshake; wait for both, as the listing must show them.
        return all(
            len(n["peers"]) == 2
            and all(p["path"] == "direct" and p["last_handshake"] is not None for p in n["peers"])
            for n in nodes
        )

    wait_until(reported, 30, "every gateway to report two direct peers with a handshake")
    view = json.loads(run_cli([*CLI, "status", "--json"], lab).stdout)
    by_name = {n["name"]: n for n in view["nodes"]}
    assert set(by_name) == {"gw1", "gw2", "gw3"}
    for site in lab.plan.sites:
        node = by_name[site.node]
        assert node["eth0_ip"] == str(site.underlay_ip)
        assert node["public_ip"] == str(site.underlay_ip)
        assert node["subnets"] == [str(site.lan)]
        for peer in node["peers"]:
            assert peer["last_handshake"] is not None
            assert peer["endpoint"].endswith(":51820")
    assert {r["prefix"] for r in view["routes"]} == {str(s.lan) for s in lab.plan.sites}
    table = run_cli([*CLI, "status"], lab)
    assert table.returncode == 0 and all(s.node in table.stdout for s in lab.plan.sites)


@pytest.mark.lab(sites=2)
def test_agent_status_works_while_the_coordinator_is_down(lab: Lab) -> None:
    state = lab.plan.state_dir / "gw1"
    assert lab.kill("hub", signal.SIGKILL)
    wait_until(
        lambda: (
            json.loads(run_cli([*AGENT, "status", "--json", "--state-dir", str(state)], lab).stdout)[
                "coordinator_reachable"
            ]
            is False
        ),
        45,
        "gw1's agent to notice the coordinator is gone",
    )
    done = run_cli([*AGENT, "status", "--json", "--state-dir", str(state)], lab)
    status = json.loads(done.stdout)
    assert status["name"] == "gw1"
    assert [p["name"] for p in status["peers"]] == ["gw2"]
    assert status["peers"][0]["last_handshake"] is not None
    shown = run_cli([*CLI, "status", "--local", "--state-dir", str(state)], lab)
    assert shown.returncode == 0 and "gw2" in shown.stdout and "UNREACHABLE" in shown.stdout
    missing = run_cli([*AGENT, "status", "--state-dir", str(state / "nowhere")], lab)
    assert (
        missing.returncode == 1
        and missing.stderr.count("\n") == 1
        and "no agent is running" in missing.stderr
    )


@pytest.mark.lab(sites=2)
def test_exported_static_peer_loads_into_a_real_interface(lab: Lab, tmp_path: Path) -> None:
    made = run_cli([*CLI, "nodes", "add", "laptop", "--json"], lab)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "laptop.conf"
    done = run_cli([*CLI, "export", "laptop", "-o", str(out)], lab)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    stripped = subprocess.run(
        ["wg-quick", "strip", str(out)], capture_output=True, text=True, check=True
    ).stdout
    conf = tmp_path / "laptop.wg"
    conf.write_text(stripped)
    # Load it into a userspace WireGuard interface inside the lab's vm1 namespace.
    ifname = f"{lab.name}-exp"
    started = lab.exec("vm1", "wireguard-go", ifname)
    assert started.returncode == 0, started.stderr
    try:
        lab.exec("vm1", "wg", "setconf", ifname, str(conf), check=True)
        dump = lab.exec("vm1", "wg", "show", ifname, "dump", check=True).stdout.splitlines()
        peers = {line.split("\t")[0]: line.split("\t")[3] for line in dump[1:]}
        nodes = {n["name"]: n for n in lab.api("GET", "/api/v1/nodes")["nodes"]}
        assert set(peers) == {nodes["gw1"]["public_key"], nodes["gw2"]["public_key"]}
        assert str(lab.plan.site(1).lan) in peers[nodes["gw1"]["public_key"]]
    finally:
        lab.exec("vm1", "ip", "link", "del", ifname)
