"""The lab at 3, 6 and 12 sites: convergence time by size, and real traffic at each size (issue 19).

Run as root: `nice -n 10 .venv/bin/python benchmarks/lab_scale.py [--sizes 3,6,12] [--timeout 300]`.

Builds lab `lsc` (userspace backend, its own name and slot) at each size in turn with `wgmesh.lab.up`,
the same call as `wgmesh lab up --sites N`, and tears it down before the next. Per size it prints:

- `up`: the whole `up` (namespaces, coordinator, relay, agents, convergence), wall clock;
- `converge`: from the agents' start (the first convergence poll) until every gateway lists every other
  one with a handshake and routes its LAN — the lab's own convergence test (wgmesh/lab/converge.py);
- the same per gateway pair (N·(N-1) pairs), and the ratio to the smallest size;
- real traffic: `ping` from vm1 to the last site's VPC host and from the last site's to the middle one's,
  through the gateways' tunnels (5 echoes each; replies and average RTT).

The machine's load average at the start of each size is printed too: the convergence time is mostly
Python programs starting (an agent per site) on two shared cores. Exits 1 when a size fails to converge
or a ping gets no reply; the lab is removed in any case.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

from wgmesh.errors import WgmeshError
from wgmesh.lab import Lab, down, up
from wgmesh.lab.converge import parse_ping_rtt
from wgmesh.lab.timescale import time_scale

LAB_NAME = "lsc"
ECHOES = 5


@dataclass(frozen=True)
class Ping:
    """One VPC host → VPC host ping through the mesh."""

    source: str
    target: str
    received: int
    rtt_ms: float | None


@dataclass(frozen=True)
class SizeRun:
    """The figures of one lab size."""

    sites: int
    load: float
    up_s: float
    converge_s: float
    pings: tuple[Ping, ...]

    @property
    def pairs(self) -> int:
        return self.sites * (self.sites - 1)


def ping(lab: Lab, source: int, target: int) -> Ping:
    """`ECHOES` pings from VPC host `source` to VPC host `target`'s address."""
    address = str(lab.plan.site(target).vm_ip)
    done = lab.exec(
        f"vm{source}", "ping", "-n", "-q", "-c", str(ECHOES), "-i", "0.2", "-W", "2", address, timeout=30
    )
    received = 0
    for line in done.stdout.splitlines():
        if "received" in line:
            received = int(line.split(",")[1].split()[0])
    return Ping(f"vm{source}", f"vm{target}", received, parse_ping_rtt(done.stdout))


def run_size(sites: int, timeout: float) -> SizeRun:
    """Bring lab `lsc` up at `sites` sites, time it, ping across it, tear it down."""
    load = os.getloadavg()[0]
    marks: dict[str, float] = {}

    def progress(text: str) -> None:
        # The convergence wait's first line comes right after the agents were started.
        if text.startswith("enrolled ") and "agents" not in marks:
            marks["agents"] = time.monotonic()
        print(f"  [{sites:>2} sites] {text}", file=sys.stderr)

    started = time.monotonic()
    try:
        lab = up(LAB_NAME, sites, "userspace", timeout=timeout, progress=progress)
        finished = time.monotonic()
        last, middle = sites, max(2, (sites + 1) // 2)
        pings = (ping(lab, 1, last), ping(lab, last, middle))
    finally:
        down(LAB_NAME)
    return SizeRun(sites, load, finished - started, finished - marks.get("agents", started), pings)


def report(runs: list[SizeRun]) -> None:
    """The table: one line per size, ratios to the first size."""
    base = runs[0]
    print(f"time scale {time_scale():g}; {ECHOES} echoes per ping")
    head = f"{'sites':>5} {'pairs':>6} {'load':>5} {'up s':>7} {'converge s':>11} {'ms/pair':>8} {'ratio':>6}"
    print(head + "  pings (replies, avg RTT)")
    for r in runs:
        pings = "; ".join(
            f"{p.source}→{p.target} {p.received}/{ECHOES}"
            + (f" {p.rtt_ms:.2f} ms" if p.rtt_ms is not None else "")
            for p in r.pings
        )
        print(
            f"{r.sites:>5} {r.pairs:>6} {r.load:>5.2f} {r.up_s:>7.1f} {r.converge_s:>11.1f} "
            f"{1000 * r.converge_s / r.pairs:>8.0f} {r.converge_s / base.converge_s:>6.2f}  {pings}"
        )
    if len(runs) > 1:
        top = runs[-1]
        print(
            f"{top.sites} vs {base.sites} sites: {top.sites / base.sites:g}x the sites, "
            f"{top.pairs / base.pairs:g}x the pairs, {top.converge_s / base.converge_s:.2f}x the convergence time"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,6,12", help="comma-separated site counts (default 3,6,12)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="convergence budget per size, seconds (default 300)"
    )
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        print(f"--sizes {args.sizes!r}: comma-separated numbers", file=sys.stderr)
        return 2
    if not sizes or any(s < 2 for s in sizes):
        print("--sizes: at least one size, each of 2 sites or more", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("run as root (the lab builds network namespaces)", file=sys.stderr)
        return 2
    runs: list[SizeRun] = []
    try:
        for sites in sizes:
            runs.append(run_size(sites, args.timeout))
    except WgmeshError as exc:
        print(f"lab at {sites} sites: {exc.message}", file=sys.stderr)
        if runs:
            report(runs)
        return 1
    report(runs)
    failed = [p for r in runs for p in r.pings if p.received == 0]
    for p in failed:
        print(f"FAILED: no reply from {p.source} to {p.target}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
