"""Route approval in the lab (issue 16): each site's token allows its own LAN, so the lab converges with no
manual step; a public /32 a gateway advertises besides stays pending and no other gateway installs it,
until `wgmesh routes approve` — then every other gateway routes it into the tunnel."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lab_paths import last_report

from wgmesh.lab import Lab, Site, wait_until
from wgmesh.lab.layout import agent_args
from wgmesh.lab.tools import program

pytestmark = [pytest.mark.e2e]

CLI = [sys.executable, "-c", "from wgmesh.cli.main import main; main()"]
EXTRA = "203.0.113.10/32"


def installed(lab: Lab, site: Site, prefix: str) -> bool:
    """Whether `site`'s gateway has any route to `prefix` (into its tunnel or anywhere else)."""
    return bool(lab.exec(site.node, "ip", "-4", "route", "show", prefix, check=True).stdout.strip())


def state_of(lab: Lab, gateway: str, prefix: str) -> str | None:
    routes = lab.api("GET", "/api/v1/routes")["routes"]
    return next((r["state"] for r in routes if (r["gateway"], r["prefix"]) == (gateway, prefix)), None)


def applied(lab: Lab, site: Site, version: int) -> bool:
    """Whether `site`'s agent reports a netmap at least as new as `version`."""
    return int(last_report(lab, site.node).get("netmap_version") or 0) >= version


def cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "WGMESH_URL": lab.url,
        "WGMESH_TOKEN": lab.admin_token,
        "WGMESH_PIN": lab.pin,
    }
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=env)


@pytest.mark.lab(sites=3)
def test_a_public_prefix_is_installed_only_once_an_admin_approves_it(lab: Lab, tmp_path: Path) -> None:
    s1, s2, s3 = lab.plan.sites
    # Every site's own LAN was approved by its token: the lab converged with no approval.
    for site in lab.plan.sites:
        assert state_of(lab, site.node, str(site.lan)) == "active"
    # gw2's agent restarted advertising a public /32 besides its LAN (its state dir holds its credential).
    assert lab.kill(s2.node, signal.SIGTERM)
    argv = agent_args(lab.plan, s2, "unused", lab.state.backend)
    token_at = argv.index("--token")
    argv = [*argv[:token_at], *argv[token_at + 2 :], "--advertise", EXTRA]
    log = tmp_path / "gw2-extra.log"
    with log.open("w") as out:
        agent = lab.popen(s2.node, program("wgmesh-agent"), *argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: state_of(lab, s2.node, EXTRA) == "pending", 30, "gw2's /32 to be pending")
        pending_at = int(lab.api("GET", "/healthz")["version"])
        for other in (s1, s3):
            wait_until(lambda o=other: applied(lab, o, pending_at), 30, f"{other.node} to apply the netmap")
            assert not installed(lab, other, EXTRA), other.node
            assert installed(lab, other, str(s2.lan)), other.node  # the LAN is routed as before
        listed = cli(lab, "routes")
        assert listed.returncode == 0, listed.stderr
        assert any(EXTRA in ln and "pending" in ln for ln in listed.stdout.splitlines()), listed.stdout
        done = cli(lab, "routes", "approve", EXTRA, "--node", s2.node, "--reason", "e2e")
        assert done.returncode == 0, done.stderr
        assert f"{EXTRA} at {s2.node}: active" in done.stdout
        for other in (s1, s3):
            wait_until(lambda o=other: installed(lab, o, EXTRA), 30, f"{other.node} to install {EXTRA}")
            route = lab.exec(other.node, "ip", "-4", "route", "show", EXTRA, check=True).stdout
            assert other.wg_interface in route, route
    finally:
        agent.terminate()  # by its PID: `ip netns exec` became the agent
        agent.wait(timeout=30)
