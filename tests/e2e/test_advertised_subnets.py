"""A gateway's subnets follow its agent's flags across restarts (issue 14, point 6): the same flags
again change nothing (no version bump, so no long-poll in the fleet wakes); no --advertise withdraws
the gateway's route from the others' kernels."""

from __future__ import annotations

import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wgmesh.errors import NotFoundError
from wgmesh.lab import Lab, Site, wait_until
from wgmesh.lab.layout import agent_args
from wgmesh.lab.tools import program

pytestmark = [pytest.mark.e2e]


def routed(lab: Lab, site: Site, prefix: str) -> bool:
    """Whether `site`'s gateway routes `prefix` into its WireGuard interface."""
    out = lab.exec(site.node, "ip", "-4", "route", "show", prefix, "dev", site.wg_interface, check=True)
    return bool(out.stdout.strip())


def registry_version(lab: Lab) -> int:
    return int(lab.api("GET", "/healthz")["version"])


def statements(lab: Lab, node: str) -> int:
    """How many times the node's agent (started by the lab) has stated its subnets."""
    log = lab.plan.state_dir / "logs" / f"{node}.log"
    return log.read_text(errors="replace").count("advertised subnets") if log.exists() else 0


def reported_since(lab: Lab, node: str, when: datetime) -> bool:
    status = lab.api("GET", f"/api/v1/nodes/{node}/status")
    return datetime.fromisoformat(status["reported_at"]) > when


def has_reported(lab: Lab, node: str) -> bool:
    try:
        lab.api("GET", f"/api/v1/nodes/{node}/status")
    except NotFoundError:
        return False
    return True


def without(argv: list[str], *flags: str) -> list[str]:
    """`argv` without each of `flags` and its value."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        else:
            out.append(arg)
    return out


@pytest.mark.lab(sites=2)
def test_restarts_state_the_flags_and_the_same_flags_wake_nobody(lab: Lab, tmp_path: Path) -> None:
    s1, s2 = lab.plan.sites
    lan = str(s2.lan)
    assert routed(lab, s1, lan)
    # A gateway's first report publishes its endpoints, which moves the version once; the mesh can
    # converge before it lands (CI stop 25 killed gw2 before its first report), so wait for both.
    nodes = [site.node for site in lab.plan.sites]
    wait_until(lambda: all(has_reported(lab, node) for node in nodes), 30, "both gateways to report")
    # The same flags again: the statement is made, and nothing in the registry moves.
    before, stated = registry_version(lab), statements(lab, s2.node)
    assert lab.kill(s2.node, signal.SIGTERM)
    restarted = datetime.now(UTC)
    lab.start(s2.node)
    wait_until(lambda: statements(lab, s2.node) > stated, 30, "gw2 to state its subnets again")
    wait_until(lambda: reported_since(lab, s2.node, restarted), 30, "gw2 to report after its restart")
    assert registry_version(lab) == before
    # No --advertise: gw2's subnet leaves the registry and gw1's kernel.
    assert lab.kill(s2.node, signal.SIGTERM)
    argv = without(agent_args(lab.plan, s2, "unused", lab.state.backend), "--advertise", "--token")
    log = tmp_path / "gw2-without-advertise.log"
    with log.open("w") as out:
        bare = lab.popen(s2.node, program("wgmesh-agent"), *argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: not routed(lab, s1, lan), 30, "gw1 to drop the route to gw2's subnet")
        assert lab.api("GET", f"/api/v1/nodes/{s2.node}")["subnets"] == []
        assert "advertised subnets" in log.read_text() and "subnets=none" in log.read_text()
    finally:
        bare.terminate()  # by its PID: `ip netns exec` became the agent
        bare.wait(timeout=30)
    # Back with its flags, gw2 advertises its subnet again and gw1 routes it.
    lab.start(s2.node)
    wait_until(lambda: routed(lab, s1, lan), 30, "gw1 to route gw2's subnet again")
    assert registry_version(lab) > before
