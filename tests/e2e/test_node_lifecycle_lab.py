"""Node lifecycle in a lab (issue 16): `wgmesh nodes rotate` gives a gateway a new WireGuard key while a
TCP stream and a ping cross it, on the same interface; a token made with `--replace` brings up a new
instance of a dead gateway under its name, and the old instance's credential dies at once."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from lab_paths import CLI, TcpStream, ping_ok, run_cli

from wgmesh import trust
from wgmesh.agent.client import CoordinatorClient
from wgmesh.errors import AuthError
from wgmesh.lab import Lab, Site, wait_until
from wgmesh.lab.layout import agent_args
from wgmesh.lab.pings import ContinuousPing
from wgmesh.lab.services import log_path
from wgmesh.lab.timescale import scaled
from wgmesh.lab.tools import program
from wgmesh.pins import Pin

pytestmark = [pytest.mark.e2e]


def peer_keys(lab: Lab, site: Site) -> set[str]:
    """The public keys of the peers on `site`'s WireGuard interface."""
    out = lab.exec(site.node, "wg", "show", site.wg_interface, "peers", check=True).stdout
    return set(out.split())


def ifindex(lab: Lab, site: Site) -> str:
    return lab.exec(
        site.node, "cat", f"/sys/class/net/{site.wg_interface}/ifindex", check=True
    ).stdout.strip()


def node_key(lab: Lab, name: str) -> str:
    return str(lab.api("GET", f"/api/v1/nodes/{name}")["public_key"])


def credential_refused(lab: Lab, credential: str) -> bool:
    """Whether the coordinator refuses `credential` (asked from the host, pinned as the agents are)."""
    client = CoordinatorClient(lab.plan.hub_url, credential, tls=trust.for_client(Pin.parse(lab.pin), None))
    try:
        client.netmap(-1, 0)
    except AuthError:
        return True
    finally:
        client.close()
    return False


@pytest.mark.lab(sites=3)
def test_a_rotation_keeps_the_interface_and_the_tcp_stream(lab: Lab, tmp_path: Path) -> None:
    s1, s2, s3 = lab.plan.sites
    wait_until(lambda: ping_ok(lab, s1.host, s2.vm_ip), 30, "vm1 to reach vm2")
    old_key, index = node_key(lab, s2.node), ifindex(lab, s2)
    old_credential = json.loads((lab.plan.state_dir / s2.node / "enrollment.json").read_text())["credential"]
    ping = ContinuousPing(lab, s1.host, s2.vm_ip, tmp_path / "ping.log")
    stream = TcpStream(lab, s1, s2, tmp_path / "stop")
    try:
        started = time.time()
        wait_until(lambda: ping.replies_since(started) >= 3, 10, "replies before the rotation")
        rotated_at = time.time()
        done = run_cli([*CLI, "nodes", "rotate", s2.node, "--wait", "60"], lab)
        assert done.returncode == 0, done.stderr
        new_key = node_key(lab, s2.node)
        assert new_key != old_key and f"{s2.node}: new key {new_key}" in done.stdout
        for other in (s1, s3):
            wait_until(lambda o=other: new_key in peer_keys(lab, o), 30, f"{other.node} to hold the new key")
            assert old_key not in peer_keys(lab, other)
        settled = time.time()
        wait_until(lambda: ping.replies_since(settled) >= 5, 30, "replies after the rotation")
        gap = ping.longest_gap(since=rotated_at)
        print(f"rotation: longest ping gap {gap:.2f} s")
        assert stream.alive(), "the TCP stream broke during the rotation"
        total, _ = stream.finish()
        assert total > 0
    finally:
        ping.stop()
        stream.kill()
    assert ifindex(lab, s2) == index  # the same interface: rotated in place, not recreated
    # A first handshake dropped costs WireGuard's 5 s retry (5.1 s before the agents started their own);
    # the netmap reaches the peers in a fraction of a second.
    assert gap < scaled(2.0), gap
    assert ping_ok(lab, s3.host, s2.vm_ip)
    assert credential_refused(lab, old_credential)  # the agent has used its new one since
    actions = [e["action"] for e in lab.api("GET", "/api/v1/audit")["entries"] if e["target"] == s2.node]
    assert "node.rotate" in actions and "node.rotate_key" in actions


@pytest.mark.lab(sites=2)
def test_a_replacement_instance_takes_a_dead_gateways_place(lab: Lab, tmp_path: Path) -> None:
    s1, s2 = lab.plan.sites
    wait_until(lambda: ping_ok(lab, s1.host, s2.vm_ip), 30, "vm1 to reach vm2")
    before = lab.api("GET", f"/api/v1/nodes/{s2.node}")
    state = lab.plan.state_dir / s2.node
    old_credential = json.loads((state / "enrollment.json").read_text())["credential"]
    # The instance dies with its disk: a new machine has neither its key nor its credential.
    assert lab.kill(s2.node, signal.SIGKILL)
    shutil.move(state, tmp_path / "dead-instance")
    made = run_cli([*CLI, "tokens", "create", "--replace", s2.node], lab)
    assert made.returncode == 0, made.stderr
    assert f"replaces node {s2.node}" in " ".join(made.stderr.split())
    token = made.stdout.strip()
    log = tmp_path / "gw2-replacement.log"
    argv = agent_args(lab.plan, s2, token, lab.state.backend)
    with log.open("w") as out:
        agent = lab.popen(s2.node, program("wgmesh-agent"), *argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: node_key(lab, s2.node) != before["public_key"], 60, "the new instance to enroll")
        assert credential_refused(lab, old_credential)  # at once
        after = lab.api("GET", f"/api/v1/nodes/{s2.node}")
        assert (after["id"], after["overlay_ip"], after["subnets"]) == (
            before["id"],
            before["overlay_ip"],
            before["subnets"],
        )
        wait_until(lambda: after["public_key"] in peer_keys(lab, s1), 30, "gw1 to hold the new key")
        assert before["public_key"] not in peer_keys(lab, s1)
        wait_until(lambda: ping_ok(lab, s1.host, s2.vm_ip), 60, "vm1 to reach vm2 through the new instance")
        assert ping_ok(lab, s2.host, s1.vm_ip)
        entries = [e for e in lab.api("GET", "/api/v1/audit")["entries"] if e["action"] == "node.replace"]
        assert [e["target"] for e in entries] == [s2.node]
        # The lab's relay pulls the revocations that now name the old instance's tickets.
        relay_log = log_path(lab.state, "relay").read_text()
        assert "revocations pulled" in relay_log and "revocation pull failed" not in relay_log, relay_log[
            -2000:
        ]
    finally:
        agent.terminate()  # by its PID: `ip netns exec` became the agent
        try:
            agent.wait(timeout=scaled(30))
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
