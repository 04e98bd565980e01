"""Watching a running lab's mesh: each gateway's WireGuard peers, pings, and waiting for convergence.

`converge` judges what is read here (pure); this module reads the machine and nudges it along.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterable

from wgmesh.errors import ValidationError, WgmeshError
from wgmesh.lab import services, system
from wgmesh.lab.api import admin_client
from wgmesh.lab.converge import GatewayView, Nudge, assess, parse_ping_rtt, parse_wg_dump, parse_wg_public_key
from wgmesh.lab.layout import Gateway, LabPlan
from wgmesh.lab.record import LabState
from wgmesh.lab.timescale import scaled
from wgmesh.lab.wait import Progress, quiet
from wgmesh.logs import kv

log = logging.getLogger("wgmesh.lab")

POLL_INTERVAL = 0.2
NUDGE_INTERVAL = 1.0


def read_gateways(plan: LabPlan) -> dict[int, GatewayView]:
    """Each site's own gateway's WireGuard peers (by site), read in parallel."""
    views = read_views([s.gateway for s in plan.sites])
    return {s.index: views[s.node] for s in plan.sites}


def read_all(plan: LabPlan) -> dict[str, GatewayView]:
    """Every gateway's WireGuard peers (by node, an HA site's second gateway too), read in parallel."""
    return read_views(plan.gateways)


def read_views(gateways: Iterable[Gateway]) -> dict[str, GatewayView]:
    """These gateways' WireGuard peers and own public key (by node), read in parallel."""
    started = {g.node: system.wg_dump_start(g.netns, g.wg_interface) for g in gateways}
    views: dict[str, GatewayView] = {}
    for node, proc in started.items():
        read = system.wg_dump_finish(proc)
        if read.text is None:
            views[node] = GatewayView(error=read.error)
            continue
        try:
            views[node] = GatewayView(
                peers=parse_wg_dump(read.text), public_key=parse_wg_public_key(read.text)
            )
        except ValidationError as exc:
            views[node] = GatewayView(error=exc.message)
    return views


def wait_converged(
    state: LabState, timeout: float | None = None, progress: Progress = quiet, *, started: float | None = None
) -> float:
    """Wait until every gateway lists every other site with a handshake; returns the seconds taken.

    `timeout` None is the default for the lab's size (LabPlan.convergence_budget). `started` (a
    time.monotonic() value) counts the timeout from an earlier moment, such as the start of `up`.
    """
    plan = state.plan()
    start = time.monotonic() if started is None else started
    budget = scaled(
        plan.convergence_budget if timeout is None else timeout
    )  # a budget on the reference machine; see wgmesh.lab.timescale
    deadline = start + budget
    nudger = _Nudger(plan)
    try:
        while True:
            for gateway in plan.gateways:
                services.check_alive(state, gateway.node)
            services.check_alive(state, "hub")
            verdict = assess(plan, read_all(plan))
            progress(f"{_enrolled(state)}, {verdict.summary}")
            if verdict.converged:
                seconds = time.monotonic() - start
                log.info("lab converged", extra=kv(lab=state.name, seconds=round(seconds, 2)))
                return seconds
            if time.monotonic() >= deadline:
                more = f" (+{len(verdict.pending) - 1} more)" if len(verdict.pending) > 1 else ""
                raise WgmeshError(
                    f"lab {state.name} did not converge within {budget:g}s: "
                    f"{nudger.explain(verdict.pending[0])}{more}; logs in {plan.state_dir / 'logs'}",
                    code="lab_timeout",
                )
            nudger.nudge(verdict.nudge)
            time.sleep(POLL_INTERVAL)
    finally:
        nudger.close()


def _enrolled(state: LabState) -> str:
    gateways = state.plan().gateways
    try:
        with admin_client(state) as api:
            names = api.node_names(scaled(2.0))
    except WgmeshError:
        return "enrolled ?"
    count = sum(1 for g in gateways if g.node in names)
    return f"enrolled {count}/{len(gateways)}"


def ping_matrix(plan: LabPlan, count: int = 1, wait: float = 2.0) -> dict[tuple[int, int], float | None]:
    """Average RTT in ms from each VPC host to every other one (None: no answer), pinged in parallel.

    A host whose LAN overlaps another site's (`--lan`, `plan.shared_lans`) neither pings nor is pinged: its
    address may be the pinging host's own or reach the other site, and the mesh routes replies to it to
    whichever of those sites holds the prefix, so an answer (or its absence) would prove nothing. Such pairs
    are missing from the result.
    """
    shared = plan.shared_lans
    pairs = [
        (a, b)
        for a in plan.sites
        for b in plan.sites
        if a.index != b.index and a.index not in shared and b.index not in shared
    ]
    results: dict[tuple[int, int], float | None] = {}
    # Bounded so that a big lab does not fork thousands of pings at once.
    for chunk in range(0, len(pairs), 32):
        running = [
            (a.index, b.index, _ping(a.vm_ns, b.vm_ip, count, wait)) for a, b in pairs[chunk : chunk + 32]
        ]
        for src, dst, proc in running:
            out, _ = proc.communicate(timeout=scaled(wait * count + 10))
            results[(src, dst)] = parse_ping_rtt(out)
    return results


def _ping(netns: str, address: object, count: int, wait: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "ping",
            "-n",
            "-q",
            "-c",
            str(count),
            "-i",
            "0.2",
            "-W",
            f"{wait:g}",
            str(address),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class _Nudger:
    """Starts one ping across each peer pair that has no handshake yet, since WireGuard only
    handshakes when there is traffic; remembers why a ping failed, for the timeout message."""

    def __init__(self, plan: LabPlan) -> None:
        self.plan = plan
        self.running: dict[Nudge, subprocess.Popen[str]] = {}
        self.last: dict[frozenset[str], float] = {}
        self.failures: dict[str, str] = {}

    def nudge(self, pairs: Iterable[Nudge]) -> None:
        self._harvest()
        now = time.monotonic()
        for each in pairs:
            key = frozenset((each.source, each.target))
            if now - self.last.get(key, -NUDGE_INTERVAL) < NUDGE_INTERVAL:
                continue
            self.last[key] = now
            netns = self.plan.gateway(each.source).netns
            self.running[each] = subprocess.Popen(
                ["ip", "netns", "exec", netns, "ping", "-n", "-q", "-c", "1", "-W", "1", each.address],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def _harvest(self) -> None:
        for each, proc in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[each]
            out = proc.communicate()[0]
            key = f"{each.source} has no handshake with {each.target}"
            if proc.returncode != 0:
                lines = [line for line in out.splitlines() if line.strip()]
                self.failures[key] = (
                    f"ping {each.address} from {each.source}: {lines[-1] if lines else 'no answer'}"
                )

    def explain(self, pending: str) -> str:
        """`pending`, with the last ping failure that concerns it."""
        self._harvest()
        why = self.failures.get(pending)
        return f"{pending} ({why})" if why else pending

    def close(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        self.running.clear()
