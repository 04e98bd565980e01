"""Path switch times in the lab: UDP blocked → traffic on the relay, UDP unblocked → back on the direct path.

Run as root: `.venv/bin/python benchmarks/relay_switch.py [--rounds 3] [--via relay|tcp-direct]`.
With `--via relay` (the default) TCP between the two gateways is blocked too, so the pair lands on the relay;
with `--via tcp-direct` it is open, and the pair lands on TCP straight between the gateways (issue 21).
Builds its own two-site lab (name `brs`), runs `ping -D -i 0.05` from vm1 to vm2, and per round blocks UDP
at gw2 (nftables, `Lab.block_udp`), then unblocks it. Measures (i) seconds from the block until pings are
answered again and the longest silence between replies, (ii) seconds until both agents report `relay`,
(iii) after the unblock, seconds until both report `direct` (and the longest silence then). Agents' reports
reach the coordinator within about a second of a switch, so (ii) and (iii) include that delay; (i) does not.
Prints each round and min/median/max; always tears the lab down.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lab_rounds import print_rounds, wait_for

from wgmesh.lab import Lab, down, up
from wgmesh.lab.pings import ContinuousPing

LAB_NAME = "brs"
TARGET = 5.0


def path_of(lab: Lab, node: str, peer: str) -> str | None:
    """`peer`'s path as `node` last reported it."""
    names = {n["public_key"]: n["name"] for n in lab.api("GET", "/api/v1/nodes", timeout=2.0)["nodes"]}
    report = lab.api("GET", f"/api/v1/nodes/{node}/status", timeout=2.0).get("report") or {}
    for p in report.get("peers", []):
        if names.get(p["public_key"]) == peer:
            return p.get("path")
    return None


def both(lab: Lab, path: str) -> bool:
    return path_of(lab, "gw1", "gw2") == path and path_of(lab, "gw2", "gw1") == path


@dataclass
class Round:
    answered: float  # (i) block -> pings answered again
    gap: float  # (i) longest silence after the block
    relay: float  # (ii) block -> both report relay
    direct: float  # (iii) unblock -> both report direct
    gap_back: float  # longest silence after the unblock


def one_round(lab: Lab, ping: ContinuousPing, via: str) -> Round:
    wait_for(lambda: both(lab, "direct"), 60, "both sides direct")
    time.sleep(1)
    blocked = time.time()
    lab.block_udp(2)
    on_relay = wait_for(lambda: both(lab, via), 30, f"both sides on {via}")
    wait_for(lambda: (ping.replies() or [0])[-1] > on_relay, 15, "pings answered on the relay")
    time.sleep(2)
    answered, gap = ping.outage(blocked)
    unblocked = time.time()
    lab.unblock_udp(2)
    on_direct = wait_for(lambda: both(lab, "direct"), 90, "both sides direct again")
    time.sleep(2)
    _, gap_back = ping.outage(unblocked)
    return Round(answered, gap, on_relay - blocked, on_direct - unblocked, gap_back)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--via", choices=("relay", "tcp-direct"), default="relay")
    args = parser.parse_args()
    down(LAB_NAME)
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory() as tmp:
        ping: ContinuousPing | None = None
        try:
            blocked_tcp = [(1, 2)] if args.via == "relay" else []
            lab = up(LAB_NAME, 2, "userspace", timeout=90, relay=True, block_tcp_between=blocked_tcp)
            ping = ContinuousPing(lab, "vm1", lab.plan.site(2).vm_ip, Path(tmp) / "ping.log", interval=0.05)
            wait_for(lambda: len(ping.replies()) >= 10, 10, "the ping running")
            for n in range(args.rounds):
                rounds.append(one_round(lab, ping, args.via))
                print(f"round {n + 1} done", file=sys.stderr)
        finally:
            if ping is not None:
                ping.stop()
            down(LAB_NAME)

    columns = [
        ("pings back s", "answered"),
        ("longest gap s", "gap"),
        (f"both {args.via} s", "relay"),
        ("both direct s", "direct"),
        ("gap back s", "gap_back"),
    ]
    print(
        f"UDP blocked at gw2 during ping -D -i 0.05 vm1 -> vm2, to {args.via}; times from the block / the unblock"
    )
    print_rounds(columns, rounds, width=15, digits=2)
    for what, attr in (
        (f"pings answered via {args.via}", "answered"),
        (f"both agents report {args.via}", "relay"),
    ):
        worst = max(getattr(r, attr) for r in rounds)
        verdict = "met" if worst <= TARGET else "NOT met"
        print(f"target <= {TARGET:g} s, {what}: {verdict} (worst {worst:.2f} s)")


if __name__ == "__main__":
    sys.exit(main())
