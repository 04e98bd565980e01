"""The lab itself: its underlay carries traffic, it grows, and `down` leaves nothing behind, even after a crash."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from wgmesh import trust
from wgmesh.lab import Lab, down, leftovers, procs, system, wait_until
from wgmesh.lab.record import load
from wgmesh.pins import Pin

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]


CLI = [sys.executable, "-c", "from wgmesh.cli.main import main; main()"]


def wgmesh(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the `wgmesh` CLI of this environment."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ping(lab: Lab, node: str, address: object) -> None:
    done = lab.exec(node, "ping", "-n", "-c", "1", "-W", "2", str(address))
    assert done.returncode == 0, f"{node} cannot reach {address}: {done.stdout}{done.stderr}"


def assert_nothing_left(name: str, pids: list[procs.ProcessId]) -> None:
    found = leftovers(name)
    assert not found.any(), f"lab {name} left {found.describe()}: {found}"
    alive = [p.pid for p in pids if procs.alive(p)]
    assert not alive, f"processes still running: {alive}"


@pytest.fixture
def spare_name(lab_name: str) -> Iterator[str]:
    """A second lab name for tests that drive the CLI themselves; removed afterwards whatever happened."""
    name = lab_name + "x"
    yield name
    down(name)


@pytest.mark.lab(sites=2, agents=False)
def test_underlay_connects_sites_hub_and_coordinator(lab: Lab) -> None:
    plan = lab.plan
    gw1, gw2 = plan.site(1), plan.site(2)
    ping(lab, "vm1", gw1.gw_lan_ip)
    ping(lab, "gw1", gw2.underlay_ip)
    ping(lab, "hub", gw1.underlay_ip)
    # The coordinator: on loopback for the host, on the hub address for the gateways.
    tls = trust.pinned(lambda: [Pin.parse(lab.pin)])
    assert httpx.get(f"{lab.url}/healthz", timeout=5, trust_env=False, verify=tls).json()["status"] == "ok"
    fetch = (
        "import urllib.request; from wgmesh import trust; from wgmesh.pins import Pin; "
        f"tls = trust.pinned(lambda: [Pin.parse('{lab.pin}')]); "
        f"print(urllib.request.urlopen('{plan.hub_url}/healthz', timeout=5, context=tls).read().decode())"
    )
    done = lab.exec("gw2", sys.executable, "-c", fetch, check=True)
    assert json.loads(done.stdout)["status"] == "ok"
    # Nothing can leave the lab: gateways know only their connected networks.
    routes = lab.exec("gw1", "ip", "-4", "route", "show", check=True).stdout
    assert "default" not in routes
    assert lab.exec("vm1", "ip", "-4", "route", "show", check=True).stdout.startswith(
        f"default via {gw1.gw_lan_ip}"
    )
    # Without agents there is no mesh: VPC hosts cannot reach each other.
    assert lab.ping_matrix(wait=0.5) == {(1, 2): None, (2, 1): None}
    # Exactly the planned names exist under the lab's prefix.
    found = leftovers(lab.name)
    assert sorted(found.namespaces) == sorted(plan.namespaces())
    assert sorted(found.links) == sorted([plan.bridge, gw1.uplink, gw2.uplink])
    assert found.nft_table


@pytest.mark.lab(sites=2, agents=False)
def test_add_site_extends_the_underlay(lab: Lab) -> None:
    site = lab.add_site()
    assert site.index == 3
    assert lab.state.sites == 3
    assert load(lab.name) == lab.state
    ping(lab, "vm3", site.gw_lan_ip)
    ping(lab, "gw3", lab.plan.site(1).underlay_ip)
    status = lab.status()
    assert all(status.namespaces.values())
    assert status.coordinator


def test_cli_up_status_env_exec_down(spare_name: str) -> None:
    name = spare_name
    start = time.monotonic()
    done = wgmesh("lab", "up", "--sites", "2", "--no-agents", "--name", name, "--json")
    up_seconds = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert [s["gateway"] for s in summary["sites"]] == ["gw1", "gw2"]
    lab = Lab.attach(name)
    coordinator = lab.process("hub")
    assert coordinator is not None

    again = wgmesh("lab", "up", "--sites", "2", "--no-agents", "--name", name)
    assert again.returncode == 1
    assert "already exists" in again.stderr

    status = json.loads(wgmesh("lab", "status", "--name", name, "--json").stdout)
    assert status["healthy"]
    assert status["coordinator"]

    env = wgmesh("lab", "env", "--name", name)
    assert env.returncode == 0
    exports = dict(item.split("=", 1) for item in shlex.split(env.stdout.strip())[1:])
    assert exports["WGMESH_URL"] == lab.url
    assert exports["WGMESH_PIN"] == lab.pin
    nodes = httpx.get(
        f"{exports['WGMESH_URL']}/api/v1/nodes",
        headers={"Authorization": f"Bearer {exports['WGMESH_TOKEN']}"},
        timeout=5,
        trust_env=False,
        verify=trust.pinned(lambda: [Pin.parse(exports["WGMESH_PIN"])]),
    )
    assert nodes.status_code == 200
    assert nodes.json() == {"nodes": []}

    hub = wgmesh(
        "lab", "exec", "--name", name, "hub", "--", "ping", "-c1", "-W2", str(lab.plan.site(2).underlay_ip)
    )
    assert hub.returncode == 0, hub.stdout + hub.stderr
    assert wgmesh("lab", "exec", "--name", name, "vm1", "--", "sh", "-c", "exit 7").returncode == 7
    assert wgmesh("lab", "exec", "--name", name, "vm9", "--", "true").returncode == 2

    start = time.monotonic()
    gone = wgmesh("lab", "down", "--name", name)
    down_seconds = time.monotonic() - start
    assert gone.returncode == 0, gone.stderr
    assert_nothing_left(name, [coordinator])
    print(f"lab up {up_seconds:.2f}s, down {down_seconds:.2f}s (2 sites, no agents, via the CLI)")
    again = wgmesh("lab", "down", "--name", name)
    assert again.returncode == 0
    assert "nothing to remove" in again.stdout


def _state_written(name: str) -> Callable[[], bool]:
    return (Path("/run/wgmesh-lab") / name / "state.json").exists


def _mid_build(name: str) -> Callable[[], bool]:
    return lambda: f"{name}-gw2" in system.namespaces()


def _coordinator_recorded(name: str) -> Callable[[], bool]:
    def check() -> bool:
        state = load(name)
        return state is not None and state.process("hub") is not None

    return check


@pytest.mark.parametrize("crash_point", [_state_written, _mid_build, _coordinator_recorded])
def test_down_cleans_up_after_a_crashed_up(
    spare_name: str, crash_point: Callable[[str], Callable[[], bool]]
) -> None:
    name = spare_name
    upper = subprocess.Popen(
        [*CLI, "lab", "up", "--sites", "3", "--no-agents", "--name", name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stray: subprocess.Popen[bytes] | None = None
    try:
        wait_until(crash_point(name), 20, f"lab {name} to reach {crash_point.__name__}", interval=0.001)
        upper.send_signal(signal.SIGKILL)
        upper.wait(timeout=10)
        recorded: list[procs.ProcessId] = []
        state = load(name)
        hub = state.process("hub") if state else None
        if hub is not None:
            recorded.append(procs.ProcessId(hub.pid, hub.start_ticks))
        # A process someone started in the lab, which only the namespace ties to it.
        if f"{name}-gw1" in system.namespaces():
            stray = subprocess.Popen(["ip", "netns", "exec", f"{name}-gw1", "sleep", "300"])
            started = procs.identity(stray.pid)
            assert started is not None
            recorded.append(started)
        done = wgmesh("lab", "down", "--name", name)
        assert done.returncode == 0, done.stderr
        if stray is not None:
            stray.wait(timeout=10)
        assert_nothing_left(name, recorded)
    finally:
        for proc in (upper, stray):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.lab(sites=2)
def test_mesh_converges_and_down_leaves_nothing(lab: Lab) -> None:
    plan = lab.plan
    assert lab.verdict().converged
    ping(lab, "vm1", plan.site(2).vm_ip)
    ping(lab, "vm2", plan.site(1).vm_ip)
    assert all(rtt is not None for rtt in lab.ping_matrix().values())
    dump = lab.exec("gw1", "wg", "show", plan.site(1).wg_interface, "allowed-ips", check=True).stdout
    assert str(plan.site(2).lan) in dump
    recorded = [p for p in (lab.process(n) for n in ("hub", "gw1", "gw2")) if p is not None]
    assert len(recorded) == 3
    report = lab.down()
    assert report.namespaces
    assert_nothing_left(lab.name, recorded)
    assert not system.wg_sockets(f"{lab.name}-")
    # wireguard-go carries its interface name on its command line; none may survive.
    survivors = [
        p.parent.name for p in Path("/proc").glob("[0-9]*/cmdline") if f"{lab.name}-wg".encode() in _read(p)
    ]
    assert not survivors, f"processes of lab {lab.name} survive: {survivors}"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
