"""Issue 18, end to end: a VPC keeps its connection when its gateway dies.

Site 2 has two gateways in one site (`--ha-site 2`): gw2, the primary, and gw2b. Their route-table hook
(`--on-primary`, wgmesh/lab/route_table_hook.py) plays the cloud's route table: vm2's default route. Each
test kills gw2 as a machine dies (the agent SIGKILLed, its WireGuard interface removed) under traffic from
vm1 to vm2, then brings gw2 back and waits for it to take its prefix back, so the next test starts where
this one did. Every figure is printed.
"""

from __future__ import annotations

import signal
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from lab_paths import TcpStream, tcp_info

from wgmesh.agent.local_status import SOCKET_NAME, read_local_status
from wgmesh.lab import Lab, leftovers, system, wait_until
from wgmesh.lab.pings import ContinuousPing
from wgmesh.lab.timescale import scaled
from wgmesh.models import LocalStatus

pytestmark = [pytest.mark.e2e]

PREEMPT = 6.0
"""The lab's `--ha-preempt-after`: gw2 takes its prefix back after answering this long."""
STREAM_PORT = 5301
MAX_OUTAGE = 10.0
"""The issue's bound on traffic's silence after the primary's death (its goal is 5 s; docs/performance.md)."""


def local(lab: Lab, node: str) -> LocalStatus:
    return read_local_status(lab.plan.state_dir / node / SOCKET_NAME, timeout=2.0)


class Carriers:
    """Where site 2's prefix goes: in gw1's WireGuard (its allowed IPs), and in vm2's route table."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.prefix = str(lab.plan.site(2).lan)
        # Keys read from the interfaces, once (a dead gateway has none to read); restarts keep them.
        self.names = {view.public_key: node for node, view in lab.observe_all().items()}
        assert len(self.names) == 3, self.names
        self.lan = {g.lan_ip: g.node for g in lab.plan.site(2).gateways}

    @classmethod
    def of(cls, lab: Lab) -> Carriers:
        """The lab's one `Carriers`, made while every gateway runs."""
        # By the handle (which the entry keeps alive): labs of one test session share a name.
        if id(lab) not in _CARRIERS:
            _CARRIERS[id(lab)] = cls(lab)
        return _CARRIERS[id(lab)]

    def wireguard(self) -> str | None:
        """The gateway gw1's WireGuard sends site 2's prefix to."""
        iface = self.lab.plan.gateway("gw1").wg_interface
        done = self.lab.exec("gw1", "wg", "show", iface, "allowed-ips", check=True)
        for line in done.stdout.splitlines():
            key, _, allowed = line.partition("\t")
            if self.prefix in allowed.split():
                return self.names.get(key, key)
        return None

    def route_table(self) -> str | None:
        """The gateway vm2's default route points at (the hook's last word)."""
        via: IPv4Address | None = self.lab.vpc_route(2)
        return self.lan.get(via) if via is not None else None

    def both(self) -> tuple[str | None, str | None]:
        return self.wireguard(), self.route_table()


_CARRIERS: dict[int, Carriers] = {}


def acked(lab: Lab) -> int:
    """Bytes of the TCP stream vm2 has acknowledged to vm1 (vm1's TCP_INFO)."""
    return int(tcp_info(lab, "vm1", STREAM_PORT, "dport").get("bytes_acked", "0"))


def health_seen_by_gw1(lab: Lab, peer: str) -> str | None:
    return next((p.health for p in local(lab, "gw1").peers if p.name == peer), None)


def kill_primary(lab: Lab) -> float:
    """gw2 dies as a machine does (its agent, its interface and wireguard-go with it); returns when."""
    killed = time.time()
    lab.kill("gw2", signal.SIGKILL, remove_interface=True)
    gw2 = lab.plan.gateway("gw2")
    assert lab.exec("gw2", "ip", "link", "show", "dev", gw2.wg_interface).returncode != 0
    assert system.netns_pids(gw2.netns) == []
    return killed


def bring_back_primary(lab: Lab, carriers: Carriers) -> None:
    """gw2 started again; waits until it carries its prefix again (the preempt rule)."""
    if not lab.alive("gw2"):
        lab.start("gw2")
    wait_until(lambda: carriers.both() == ("gw2", "gw2"), PREEMPT + 40, "gw2 carrying its prefix again")


def outage(lab: Lab, ping: ContinuousPing, carriers: Carriers, killed: float, what: str) -> None:
    """After gw2's death at `killed`: gw1 sends to gw2b, and vm1's pings are answered again within the
    issue's bound; the figures printed."""
    wait_until(lambda: carriers.wireguard() == "gw2b", 30, "gw1 sending site 2 to gw2b")
    moved = time.time() - killed  # (at most one look late, 0.05 s and a `wg show`)
    wait_until(lambda: (ping.last_reply() or 0.0) > killed, 30, "pings answered again")
    answered = time.time()
    wait_until(lambda: ping.replies_since(answered) >= 20, 10, "a second of replies after the failover")
    back, gap = ping.outage(killed)
    print(
        f"{what} gw2 killed; gw1 sends to gw2b {moved:.2f} s after; pings answered again {back:.2f} s "
        f"after the kill (longest gap {gap:.2f} s)"
    )
    assert back < scaled(MAX_OUTAGE), f"VPC 2 unreachable for {back:.1f} s"


def failover_under_traffic(lab: Lab, tmp_path: Path, what: str) -> None:
    """The primary killed under a continuous ping and a TCP stream vm1 -> vm2: the standby carries them
    within the bound, the stream arrives whole."""
    carriers = Carriers.of(lab)
    one, two = lab.plan.site(1), lab.plan.site(2)
    wait_until(lambda: carriers.both() == ("gw2", "gw2"), PREEMPT + 30, "gw2 carrying site 2")
    ping = ContinuousPing(lab, "vm1", two.vm_ip, tmp_path / "ping.log", interval=0.05)
    stream = TcpStream(lab, one, two, tmp_path / "stop", port=STREAM_PORT)
    try:
        wait_until(
            lambda: len(ping.replies()) >= 10 and acked(lab) > 0, 10, "the ping and the stream running"
        )
        killed = kill_primary(lab)
        before = acked(lab)
        wait_until(lambda: carriers.route_table() == "gw2b", 30, "vm2's route via gw2b")
        hooked = time.time() - killed
        outage(lab, ping, carriers, killed, f"{what}: vm2's route via gw2b {hooked:.2f} s after the kill;")
        # The same connection carries on: vm2 acknowledges data sent after the failover.
        wait_until(
            lambda: acked(lab) > before + 512 * 1024, 30, "the stream's data acknowledged after the failover"
        )
        total, _ = stream.finish()
        print(f"{what}: the TCP stream carried {total / 1e6:.1f} MB intact across the failover")
        view = next(g for g in local(lab, "gw1").ha if str(g.prefix) == carriers.prefix)
        assert (view.holder, view.code, view.moved_from) == ("gw2b", "holder_down", "gw2"), view
    finally:
        ping.stop()
        stream.kill()


@pytest.mark.lab(sites=2, ha_sites=[2], ha_preempt_after=PREEMPT)
class TestPrimaryGatewayDies:
    def test_the_second_gateway_stands_by_in_the_same_site(self, shared_lab: Lab) -> None:
        lab = shared_lab
        site = lab.plan.site(2)
        lan = str(site.lan)
        routes = {(r["gateway"], r["prefix"]): r for r in lab.api("GET", "/api/v1/routes")["routes"]}
        gw2, gw2b = routes[("gw2", lan)], routes[("gw2b", lan)]
        # gw2b's claim, approved by the lab as an admin would, stands by for gw2's
        assert (gw2["state"], gw2b["state"]) == ("active", "standby"), (gw2, gw2b)
        assert gw2b["decided_by"] not in (None, "token", "network"), gw2b
        sites = {n["name"]: n["site"] for n in lab.api("GET", "/api/v1/nodes")["nodes"]}
        assert (sites["gw1"], sites["gw2"], sites["gw2b"]) == ("vpc1", "vpc2", "vpc2"), sites
        assert lab.verdict().summary == "peers 6/6, handshakes 6/6"
        assert lab.vpc_route(2) == site.gateway.lan_ip
        # every netmap names the group, primary first
        groups = lab.api("GET", "/api/v1/topology")["ha_groups"]
        assert [(g["prefix"], [m["node"] for m in g["members"]]) for g in groups] == [(lan, ["gw2", "gw2b"])]

    def test_the_standby_carries_a_ping_and_a_tcp_stream(self, shared_lab: Lab, tmp_path: Path) -> None:
        try:
            failover_under_traffic(shared_lab, tmp_path, "coordinator up")
            # the coordinator shows the group as the agents report it
            groups = shared_lab.api("GET", "/api/v1/topology")["ha_groups"]
            assert len(groups) == 1, groups
        finally:
            bring_back_primary(shared_lab, Carriers.of(shared_lab))

    def test_the_same_with_every_coordinator_down(self, shared_lab: Lab, tmp_path: Path) -> None:
        lab = shared_lab
        lab.kill("hub")
        try:
            failover_under_traffic(lab, tmp_path, "every coordinator down")
            # gw2 comes back without any coordinator (from its cached netmap) and takes over by the rule
            bring_back_primary(lab, Carriers.of(lab))
        finally:
            if not lab.alive("hub"):
                lab.start("hub")
                lab.wait_coordinator()
            bring_back_primary(lab, Carriers.of(lab))

    def test_a_flapping_primary_moves_nothing_and_a_stable_one_takes_over_by_the_rule(
        self, shared_lab: Lab, tmp_path: Path
    ) -> None:
        lab = shared_lab
        carriers = Carriers.of(lab)
        two = lab.plan.site(2)
        wait_until(lambda: carriers.both() == ("gw2", "gw2"), PREEMPT + 30, "gw2 carrying site 2")
        kill_primary(lab)
        wait_until(lambda: carriers.both() == ("gw2b", "gw2b"), 30, "gw2b carrying site 2")
        ping = ContinuousPing(lab, "vm1", two.vm_ip, tmp_path / "ping.log", interval=0.05)
        try:
            wait_until(lambda: len(ping.replies()) >= 10, 10, "the ping running")
            flapping_since = time.time()
            seen: set[tuple[str | None, str | None]] = set()
            for _ in range(3):
                # gw2 up for well under the preempt time, as gw1's probes see it, then dead again
                lab.start("gw2")
                wait_until(lambda: health_seen_by_gw1(lab, "gw2") == "up", 30, "gw1 hearing gw2")
                up_at = time.monotonic()
                while time.monotonic() - up_at < PREEMPT * 0.3:
                    seen.add(carriers.both())
                kill_primary(lab)
                wait_until(lambda: health_seen_by_gw1(lab, "gw2") == "down", 30, "gw1 seeing gw2 down")
                seen.add(carriers.both())
            gap = ping.longest_gap(since=flapping_since)
            print(f"gw2 flapped 3 times: site 2 carried by {sorted(seen)}; longest ping gap {gap:.2f} s")
            assert seen == {("gw2b", "gw2b")}, f"the prefix moved while gw2 flapped: {seen}"
            assert gap < scaled(1.0), f"traffic stopped for {gap:.2f} s while gw2 flapped"
            # Stable: gw2 takes its prefix back after answering for PREEMPT seconds, not before.
            lab.start("gw2")
            wait_until(lambda: health_seen_by_gw1(lab, "gw2") == "up", 30, "gw1 hearing gw2")
            up_at = time.monotonic()
            stable_since = time.time()
            back = wait_until(
                lambda: carriers.wireguard() == "gw2", PREEMPT + 30, "gw2 taking its prefix back"
            )
            after = time.monotonic() - up_at
            wait_until(lambda: carriers.route_table() == "gw2", 20, "vm2's route via gw2 again")
            gap = ping.longest_gap(since=stable_since)
            print(
                f"gw2 stable: gw1 sends to it again {after:.2f} s after hearing it (rule: {PREEMPT:g} s); "
                f"longest ping gap around the move {gap:.2f} s; waited {back:.2f} s"
            )
            # (the agent heard gw2 a little before the test read it in gw1's status: up to a look and a read)
            assert after >= PREEMPT - 2.0, f"gw2 took its prefix back after {after:.1f} s"
            assert gap < scaled(2.0), f"traffic stopped for {gap:.2f} s when gw2 took its prefix back"
            view = next(g for g in local(lab, "gw1").ha if str(g.prefix) == carriers.prefix)
            assert (view.holder, view.code, view.moved_from) == ("gw2", "preempt", "gw2b"), view
        finally:
            ping.stop()
            bring_back_primary(lab, carriers)


@pytest.mark.lab(sites=2, ha_sites=[2], ha_preempt_after=PREEMPT, ha_return="masquerade")
def test_without_a_hook_the_members_masquerade_and_the_vpc_needs_no_route(lab: Lab, tmp_path: Path) -> None:
    carriers = Carriers.of(lab)
    two = lab.plan.site(2)
    wait_until(lambda: carriers.wireguard() == "gw2", 30, "gw1 sending site 2 to gw2")

    def masquerading() -> bool:
        # once the group is in their netmaps: each member masquerades into its own prefix, nothing else
        for gateway in two.gateways:
            table = lab.exec(gateway.node, "nft", "list", "table", "inet", f"wgmesh_{gateway.wg_interface}")
            assert f"ip daddr {two.lan} masquerade" in " ".join(table.stdout.split()), table.stdout
        return True

    wait_until(masquerading, 30, "both members masquerading into site 2's prefix")
    # vm2 gets no route to the mesh at all: it can answer only what comes from its own LAN, which is what a
    # masquerading gateway makes of vm1's pings.
    lab.exec("vm2", "ip", "route", "del", "default", check=True)
    ping = ContinuousPing(lab, "vm1", two.vm_ip, tmp_path / "ping.log", interval=0.05)
    try:
        wait_until(lambda: len(ping.replies()) >= 10, 10, "vm2 answering vm1 through gw2's masquerade")
        killed = kill_primary(lab)
        outage(lab, ping, carriers, killed, "masquerade (vm2 with no route to the mesh):")
        assert lab.vpc_route(2) is None
    finally:
        ping.stop()
    # an HA site leaves nothing behind: gw2b's namespace, links and processes, vm2's bridge
    lab.down()
    found = leftovers(lab.name)
    assert not found.any(), found.describe()
