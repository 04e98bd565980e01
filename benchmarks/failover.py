"""Failover times of a highly available central node: two coordinators on PostgreSQL, two relays.

Run as root: `.venv/bin/python benchmarks/failover.py [--rounds 5]`.
Builds its own lab (name `bfo`: three sites, `--db postgresql --coordinators 2 --relays 2`, UDP blocked at
gw3 so that gw1-gw3 is relayed) and per round measures:
(a) a coordinator killed (SIGKILL, the one gw2 long-polls) -> seconds until gw2's agent says it follows the
    other one and reaches it (its local status, read from its unix socket); the killed one is restarted;
(b) a change made on one coordinator (a static peer added through the one gw1 does not follow) -> seconds
    until every gateway has it as a WireGuard peer (the other coordinator's long-polls woken by
    LISTEN/NOTIFY); the peer is deleted again;
(c) a relay killed (SIGKILL, gw1's home) under `ping -D -i 0.05` vm1 -> vm3 -> seconds from the kill until
    pings are answered again, and the longest silence; the relay is restarted;
(d) a coordinator hung (SIGSTOP: its kernel still accepts and acknowledges, nothing answers, as with a
    machine stalled or gone without a reset) -> seconds until gw2 follows the other one; then SIGCONT.
    A killed process resets its connections at once; a hung one is left by the agent's request deadlines
    (a status report: 10 s; a long-poll: its 25 s wait + 10 s);
(e) site 2's primary gateway killed as a machine dies (gw2: its agent SIGKILLed, its WireGuard interface
    removed; site 2 has a standby gw2b, `--ha-site 2`, and the lab's route-table hook) under
    `ping -D -i 0.05` vm1 -> vm2 -> seconds from the kill until pings are answered again, and the longest
    silence; gw2 is started again and waited for until it carries its prefix again (the preempt rule);
(f) the same with both coordinators killed first (started again after the round).
Prints each round and min/median/max; always tears the lab down.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lab_rounds import print_rounds, wait_for

from wgmesh.agent.local_status import SOCKET_NAME, read_local_status
from wgmesh.lab import Lab, down, up
from wgmesh.lab.layout import coordinator_node, relay_node
from wgmesh.lab.pings import ContinuousPing
from wgmesh.models import LocalStatus

LAB_NAME = "bfo"
PREEMPT = 5.0
"""The lab's `--ha-preempt-after`, short so that rounds of (e) and (f) do not wait long for gw2's return."""
FINE = 0.02
"""Seconds between looks where the look is the measurement: (a) and (b)."""


def local(lab: Lab, node: str) -> LocalStatus:
    return read_local_status(lab.plan.state_dir / node / SOCKET_NAME, timeout=2.0)


def coordinator_number(lab: Lab, url: str) -> int:
    return lab.plan.coordinator_urls.index(url) + 1


def peer_keys(lab: Lab) -> list[set[str]]:
    return [{p.public_key for p in view.peers} for view in lab.observe().values()]


@dataclass
class Round:
    coordinator: float  # (a) kill -> gw2 follows and reaches the other coordinator
    change: float  # (b) change on one coordinator -> peer on every gateway
    relay: float  # (c) relay killed -> pings answered again
    gap: float  # (c) the longest silence after the kill
    hung: float  # (d) SIGSTOP -> gw2 follows the other coordinator
    gateway: float = float("nan")  # (e) primary gateway killed -> VPC 2 answers again
    gateway_gap: float = float("nan")  # (e) the longest silence
    alone: float = float("nan")  # (f) the same with every coordinator down
    alone_gap: float = float("nan")


def kill_coordinator(lab: Lab) -> float:
    before = local(lab, "gw2").coordinator
    node = coordinator_node(coordinator_number(lab, before))
    killed = time.time()
    lab.kill(node, signal.SIGKILL)

    def moved() -> bool:
        status = local(lab, "gw2")
        return status.coordinator != before and status.coordinator_reachable

    took = wait_for(moved, 30, "gw2 following the other coordinator", interval=FINE) - killed
    lab.start(node)
    lab.wait_coordinator(node=node)
    return took


def hang_coordinator(lab: Lab) -> float:
    before = local(lab, "gw2").coordinator
    node = coordinator_node(coordinator_number(lab, before))
    stopped = time.time()
    lab.signal(node, signal.SIGSTOP)
    try:

        def moved() -> bool:
            status = local(lab, "gw2")
            return status.coordinator != before and status.coordinator_reachable

        return wait_for(moved, 90, "gw2 leaving the hung coordinator", interval=0.1) - stopped
    finally:
        lab.signal(node, signal.SIGCONT)


def change_through_the_other(lab: Lab, n: int) -> float:
    other = 3 - coordinator_number(lab, local(lab, "gw1").coordinator)
    started = time.time()
    made = lab.api("POST", "/api/v1/nodes", {"name": f"bench{n}", "generate_keys": True}, coordinator=other)
    key = str(made["public_key"])
    took = wait_for(
        lambda: all(key in keys for keys in peer_keys(lab)),
        30,
        "the new peer on every gateway",
        interval=FINE,
    )
    lab.api("DELETE", f"/api/v1/nodes/bench{n}")
    return took - started


def kill_relay(lab: Lab, ping: ContinuousPing) -> tuple[float, float]:
    home = next(r for r in local(lab, "gw1").relays if r.home)
    index = next(i for i in (1, 2) if home.id.startswith(f"{lab.plan.hub_address(i)}:"))
    wait_for(lambda: len(ping.replies()) >= 10, 10, "the ping running")
    killed = time.time()
    lab.kill(relay_node(index), signal.SIGKILL)
    wait_for(lambda: (ping.replies() or [0.0])[-1] > killed, 30, "pings answered after the relay's death")
    # a second of replies (20 at 50 ms) after the first, so the silence measured is the whole of it
    answered = time.time()
    wait_for(lambda: ping.replies_since(answered) >= 20, 10, "a second of replies after the relay's death")
    back, gap = ping.outage(killed)
    lab.start(relay_node(index))
    lab.wait_relay(node=relay_node(index))

    def both_up() -> bool:
        return all(r.up for node in ("gw1", "gw3") for r in local(lab, node).relays)

    wait_for(both_up, 30, "gw1 and gw3 connected to both relays again")
    return back, gap


def site2_carrier(lab: Lab) -> str | None:
    """The gateway gw1's agent sends site 2's prefix to (its local status)."""
    prefix = str(lab.plan.site(2).lan)
    return next((g.holder for g in local(lab, "gw1").ha if str(g.prefix) == prefix), None)


def kill_primary_gateway(lab: Lab, ping: ContinuousPing) -> tuple[float, float]:
    wait_for(
        lambda: site2_carrier(lab) == "gw2" and lab.vpc_route(2) == lab.plan.site(2).gateway.lan_ip,
        PREEMPT + 60,
        "gw2 carrying site 2",
    )
    wait_for(lambda: ping.replies_since(time.time() - 1) >= 15, 10, "the ping to vm2 running")
    killed = time.time()
    lab.kill("gw2", signal.SIGKILL, remove_interface=True)
    wait_for(lambda: (ping.replies() or [0.0])[-1] > killed, 30, "vm2 answering after gw2's death")
    answered = time.time()
    wait_for(lambda: ping.replies_since(answered) >= 20, 10, "a second of replies after gw2's death")
    back, gap = ping.outage(killed)
    lab.start("gw2")
    return back, gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    down(LAB_NAME)
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory() as tmp:
        ping: ContinuousPing | None = None
        to_vpc2: ContinuousPing | None = None
        try:
            lab = up(
                LAB_NAME,
                3,
                "userspace",
                timeout=90,
                relay=True,
                db="postgresql",
                coordinators=2,
                relays=2,
                block_udp=[3],
                block_tcp_between=[(1, 3), (2, 3)],  # site 3 on the relays, not straight over TCP
                ha_sites=[2],
                ha_preempt_after=PREEMPT,
            )
            ping = ContinuousPing(lab, "vm1", lab.plan.site(3).vm_ip, Path(tmp) / "ping.log", interval=0.05)
            to_vpc2 = ContinuousPing(
                lab, "vm1", lab.plan.site(2).vm_ip, Path(tmp) / "vpc2.log", interval=0.05
            )
            for n in range(args.rounds):
                coordinator = kill_coordinator(lab)
                change = change_through_the_other(lab, n)
                back, gap = kill_relay(lab, ping)
                rounds.append(Round(coordinator, change, back, gap, float("nan")))
                rounds[n].gateway, rounds[n].gateway_gap = kill_primary_gateway(lab, to_vpc2)
                for hub in (coordinator_node(1), coordinator_node(2)):
                    lab.kill(hub, signal.SIGKILL)
                try:
                    rounds[n].alone, rounds[n].alone_gap = kill_primary_gateway(lab, to_vpc2)
                    # back to where it started: gw2 carrying its prefix, then the coordinators
                    wait_for(
                        lambda: site2_carrier(lab) == "gw2", PREEMPT + 60, "gw2 back without coordinators"
                    )
                finally:
                    for hub in (coordinator_node(1), coordinator_node(2)):
                        lab.start(hub)
                        lab.wait_coordinator(node=hub)
                # Agents that lost every coordinator retry with back-off: the next round's (a) and (b) must
                # not measure that back-off, so every agent reaches a coordinator again first.
                wait_for(
                    lambda: all(local(lab, g.node).coordinator_reachable for g in lab.plan.gateways),
                    120,
                    "every agent reaching a coordinator again",
                )
                print(f"round {n + 1} of (a)-(c), (e), (f) done", file=sys.stderr)
            # After all the others: an agent that left a hung coordinator keeps its long-poll there until
            # that poll's deadline, which would make a later (a) measure that poll, not a failover.
            for n in range(args.rounds):
                rounds[n].hung = hang_coordinator(lab)
                print(f"round {n + 1} of (d) done", file=sys.stderr)
        finally:
            if ping is not None:
                ping.stop()
            if to_vpc2 is not None:
                to_vpc2.stop()
            down(LAB_NAME)

    columns = [
        ("(a) coord s", "coordinator"),
        ("(b) change s", "change"),
        ("(c) relay s", "relay"),
        ("(c) gap s", "gap"),
        ("(d) hung s", "hung"),
        ("(e) gw s", "gateway"),
        ("(e) gap s", "gateway_gap"),
        ("(f) gw s", "alone"),
        ("(f) gap s", "alone_gap"),
    ]
    print("two coordinators on PostgreSQL, two relays; (a) coordinator killed -> its agent on the other;")
    print("(b) change on one -> on every gateway; (c) relay killed -> relayed pings answered (longest gap);")
    print("(d) coordinator hung (SIGSTOP) -> its agent on the other;")
    print("(e) site 2's primary gateway killed -> vm2 answers vm1 again through the standby (longest gap);")
    print("(f) the same with both coordinators down")
    print_rounds(columns, rounds, width=14, digits=3)


if __name__ == "__main__":
    sys.exit(main())
