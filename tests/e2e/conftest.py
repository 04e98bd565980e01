"""Fixtures for end-to-end tests: a real lab in network namespaces, always torn down.

    @pytest.mark.e2e
    @pytest.mark.lab(sites=3)               # optional: sites, agents, backend, timeout, relay,
                                            # block_udp=[1], throttle_udp={1: "10mbit"}, p2p_off=[2],
                                            # block_tcp_between=[(1, 2)],
                                            # lan_mtu={1: 9001}, underlay_mtu={2: 1460}, sg_drop_icmp=[1],
                                            # db="postgresql", coordinators=2, relays=2,
                                            # ha_sites=[2], ha_preempt_after=10.0
    def test_x(lab: Lab, wait_until: WaitUntil) -> None:
        lab.exec("vm1", "ping", "-c1", str(lab.plan.site(2).vm_ip), check=True)

`shared_lab` is the same lab built once for a whole class (the `lab` marker on the class), for cases that
can share one lab and set what differs with the lab's runtime switches.

`wait_until` is also importable: `from wgmesh.lab import wait_until`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from wgmesh.lab import Lab, agent_available, down, postgres, up
from wgmesh.lab import wait_until as _wait_until
from wgmesh.lab.procs import tail

WaitUntil = Callable[..., float]

LAB_DEFAULTS: dict[str, Any] = {
    "sites": 3,
    "agents": True,
    "backend": "userspace",
    "timeout": 60.0,
    # None: the relay runs when wgmesh-relay is installed.
    "relay": None,
    "block_udp": (),
    "throttle_udp": {},
    "block_tcp_between": (),  # pairs of sites, [(1, 2)]: no TCP between those gateways' underlay addresses
    "p2p_off": (),
    "lan_mtu": {},
    "underlay_mtu": {},
    "sg_drop_icmp": (),
    "db": "sqlite",
    "coordinators": 1,
    "relays": 1,
    "ha_sites": (),
    "ha_preempt_after": 10.0,
    "ha_return": "route-table",
    "lans": {},  # {site: LAN} for sites whose LAN is not 10.I.0.0/24 (issue 20: overlapping VPCs)
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lab(sites=3, agents=True, backend='userspace', timeout=60.0, relay=None, block_udp=(), "
        "throttle_udp={}, block_tcp_between=(), p2p_off=(), lan_mtu={}, underlay_mtu={}, sg_drop_icmp=(), "
        "db='sqlite', coordinators=1, relays=1, ha_sites=(), ha_preempt_after=10.0, ha_return='route-table', "
        "lans={}): how the `lab` and `shared_lab` fixtures build it",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    # Keep each phase's report on the item, so the fixture knows in teardown whether the test failed.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def lab_skip_reason(agents: bool) -> str | None:
    """Why this machine cannot run a lab (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    tools = ["ip", "nft", "ss", "ping", "tc"] + (["wg", "wireguard-go"] if agents else [])
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)}"
    if agents and not agent_available():
        return "wgmesh-agent is not available yet (wgmesh.agent.main cannot be imported)"
    return None


@pytest.fixture(scope="session")
def lab_name() -> str:
    """A lab name unique to this test session, so a crashed run or a demo lab never collides with it."""
    return "t" + secrets.token_hex(2)


@contextlib.contextmanager
def built_lab(name: str, marker: pytest.Mark | None, failed: Callable[[], bool]) -> Iterator[Lab]:
    """A converged lab built per a `lab` marker; torn down afterwards whatever happened, its agents'
    logs printed first when `failed()` says so."""
    options: Mapping[str, Any] = {**LAB_DEFAULTS, **(marker.kwargs if marker else {})}
    reason = lab_skip_reason(options["agents"])
    if reason is None and options["db"] == "postgresql":
        reason = postgres.missing()
    if reason is not None:
        pytest.skip(reason)
    logs = Path("/run/wgmesh-lab") / name / "logs"
    try:
        handle = up(
            name,
            options["sites"],
            options["backend"],
            agents=options["agents"],
            timeout=options["timeout"],
            relay=options["relay"],
            block_udp=options["block_udp"],
            throttle_udp=options["throttle_udp"],
            block_tcp_between=options["block_tcp_between"],
            p2p_off=options["p2p_off"],
            lan_mtu=options["lan_mtu"],
            underlay_mtu=options["underlay_mtu"],
            sg_drop_icmp=options["sg_drop_icmp"],
            db=options["db"],
            coordinators=options["coordinators"],
            relays=options["relays"],
            ha_sites=options["ha_sites"],
            ha_preempt_after=options["ha_preempt_after"],
            ha_return=options["ha_return"],
            lans=options["lans"],
        )
    except BaseException:
        _print_logs(logs)
        down(name)
        raise
    try:
        yield handle
    finally:
        if failed():
            _print_snapshot(handle)
            _print_logs(logs)
        down(name)


@pytest.fixture
def lab(request: pytest.FixtureRequest, lab_name: str) -> Iterator[Lab]:
    """A converged lab built per the test's `lab` marker; torn down afterwards whatever happened."""

    def failed() -> bool:
        report = getattr(request.node, "report_call", None)
        return report is not None and bool(report.failed)

    with built_lab(lab_name, request.node.get_closest_marker("lab"), failed) as handle:
        yield handle


@pytest.fixture(scope="class")
def shared_lab(request: pytest.FixtureRequest, lab_name: str) -> Iterator[Lab]:
    """One converged lab for every test of a class, built per the class's `lab` marker; torn down after
    the class's last test whatever happened. Its own name, so it never meets a test's `lab`."""
    failures = request.session.testsfailed
    with built_lab(
        lab_name + "s", request.node.get_closest_marker("lab"), lambda: request.session.testsfailed > failures
    ) as handle:
        yield handle


# Lines every apply writes: in a failure's excerpt they would push out the few that say what changed.
ROUTINE_LOG = ("firewall table written", "data plane changed", "netmap applied")


def _print_logs(logs: Path) -> None:
    # Printed in the fixture, so pytest shows them with the failure; the files go with `down`.
    for path in sorted(logs.glob("*.log")) if logs.is_dir() else []:
        lines = [line for line in tail(path, 400).splitlines() if not any(r in line for r in ROUTINE_LOG)]
        shown = "\n".join(lines[-25:])
        print(f"--- {path.name} (last 25 lines, routine apply lines left out) ---\n{shown}")


def _print_snapshot(lab: Lab) -> None:
    """Each gateway's WireGuard peers (handshake age, counters, endpoint) and tunnel routes at failure
    time: what a flake that does not come back needs to be explained (run 14's lost pings were not)."""
    now = int(time.time())
    for site in lab.plan.gateways:
        dump = lab.exec(site.node, "wg", "show", site.wg_interface, "dump")
        routes = lab.exec(site.node, "ip", "-4", "route", "show", "dev", site.wg_interface)
        print(f"--- {site.node} {site.wg_interface} at failure ---")
        for line in dump.stdout.splitlines()[1:]:
            cols = line.split("\t")
            if len(cols) == 8:
                age = f"{now - int(cols[4])}s ago" if cols[4] != "0" else "never"
                print(
                    f"peer {cols[0][:8]} endpoint={cols[2]} handshake={age} rx={cols[5]} tx={cols[6]} allowed={cols[3]}"
                )
        if dump.returncode != 0:
            print(f"wg show failed: {dump.stderr.strip()}")
        print("routes: " + "; ".join(routes.stdout.splitlines()))
        try:
            report = lab.api("GET", f"/api/v1/nodes/{site.node}/status").get("report") or {}
        except Exception as exc:  # the coordinator may be what the test stopped
            print(f"paths: unknown ({exc})")
            continue
        reported = [
            f"{p['public_key'][:8]}={p.get('path')}/{p.get('reason')}" for p in report.get("peers", [])
        ]
        print("paths: " + " ".join(reported))


@pytest.fixture
def wait_until() -> WaitUntil:
    """`wait_until(predicate, timeout, what)`: poll until true, return the seconds taken, or fail naming `what`."""
    return _wait_until
