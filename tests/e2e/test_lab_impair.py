"""The lab's switches, proven on the wire: UDP blocked at a gateway while TCP flows, UDP throttled to its
rate while TCP is not, TCP blocked between two gateways while UDP and their other TCP flow, and the hub's
relay listening next to the coordinator.

Each test states the path it expects: gateway to gateway across the underlay bridge (no agents, so no
WireGuard in the way), and the figures it tolerates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from wgmesh.errors import WgmeshError
from wgmesh.lab import Lab, down, leftovers, wait_until
from wgmesh.lab.impair import GATEWAY_UPLINK, TCP_FAMILY, TCP_TABLE, UDP_FAMILY, UDP_TABLE
from wgmesh.lab.layout import API_PORT, RELAY_PORT
from wgmesh.lab.record import load
from wgmesh.lab.services import relay_pin
from wgmesh.lab.system import listener_pids, nft_has_table_in, tc_root_kind
from wgmesh.lab.timescale import scaled
from wgmesh.lab.tools import relay_available

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

CLI = [sys.executable, "-c", "from wgmesh.cli.main import main; main()"]
ECHO_PORT = 7000
IPERF_PORT = 5201
# What "limited to 10 Mbit/s" tolerates: HTB's burst lets a little more through at the start, and the
# goodput iperf3 counts is below the rate by the UDP/IP headers.
THROTTLE_BAND = (8.5e6, 10.5e6)
TCP_FLOOR = 200e6
TCP_SECONDS = "1"
"""TCP runs only show that the UDP throttle leaves TCP alone: above TCP_FLOOR, where the underlay carries
about 10 Gbit/s (CI run 11: 10.7 out, 13.8 in); TCP gets there within milliseconds on a veth, so one
second shows it as well as two."""

# A UDP and TCP echo server on ADDRESS:PORT, printing "ready" once both sockets are bound.
ECHO_SERVER = """
import socket, sys, threading
addr, port = sys.argv[1], int(sys.argv[2])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((addr, port))
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); tcp.bind((addr, port)); tcp.listen(8)
def serve_udp():
    while True:
        data, peer = udp.recvfrom(2048); udp.sendto(data, peer)
threading.Thread(target=serve_udp, daemon=True).start()
print("ready", flush=True)
while True:
    conn, _ = tcp.accept()
    with conn:
        conn.sendall(conn.recv(2048))
"""

# One echo round trip to ADDRESS:PORT over udp or tcp; exit 0 when the answer came back within a second.
ECHO_CLIENT = """
import socket, sys
addr, port, proto, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
with socket.socket(socket.AF_INET, kind) as s:
    s.settimeout(wait)
    try:
        s.connect((addr, port)); s.sendall(b"ping")
        sys.exit(0 if s.recv(16) == b"ping" else 1)
    except OSError as exc:
        print(exc); sys.exit(1)
"""


# A TCP connection to ADDRESS:PORT, opened and closed (for servers that speak first or TLS); exit 0 when it
# was accepted within WAIT seconds.
CONNECT_CLIENT = """
import socket, sys
addr, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    socket.create_connection((addr, port), timeout=wait).close()
except OSError as exc:
    print(exc); sys.exit(1)
"""


def wgmesh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `wgmesh` CLI of this environment."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=env)


@contextmanager
def echo_server(lab: Lab, node: str, address: str) -> Iterator[None]:
    """A UDP+TCP echo server on `node`, stopped by its pid afterwards."""
    proc = lab.popen(
        node,
        sys.executable,
        "-c",
        ECHO_SERVER,
        address,
        str(ECHO_PORT),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", "echo server did not start"
        yield
    finally:
        # `ip netns exec` execs the command, so this pid is the server itself.
        proc.terminate()
        proc.wait(timeout=10)


def echo(lab: Lab, node: str, address: str, proto: str, *, blocked: bool = False) -> bool:
    """Whether one echo over `proto` from `node` to `address` came back.

    The answer comes from a Python server that a loaded machine may not schedule for a while: an echo
    that must come back gets a budget scaled to the machine (a fixed 1 s failed run 19, at load average
    4). One that must not (`blocked`) waits 1 s: a block drops the datagram, so waiting longer would only
    slow the test, and the positive echoes around it prove the server answers.
    """
    wait = 1.0 if blocked else scaled(10.0)
    done = lab.exec(
        node, sys.executable, "-c", ECHO_CLIENT, address, str(ECHO_PORT), proto, str(wait), timeout=wait + 30
    )
    return done.returncode == 0


@pytest.mark.lab(sites=2, agents=False, block_udp=[1])
def test_blocked_udp_fails_both_ways_while_tcp_works_until_unblocked(lab: Lab) -> None:
    gw1, gw2 = (str(lab.plan.site(i).underlay_ip) for i in (1, 2))
    assert lab.state.blocked_udp == [1]
    assert nft_has_table_in(lab.plan.site(1).gw_ns, UDP_FAMILY, UDP_TABLE)
    with echo_server(lab, "gw2", gw2):
        assert not echo(lab, "gw1", gw2, "udp", blocked=True), "UDP from gw1 passed the block"
        assert echo(lab, "gw1", gw2, "tcp"), "TCP from gw1 was blocked too"
        # Idempotent: blocking again changes nothing, and the CLI's status shows the switch.
        assert wgmesh("lab", "block-udp", "1", "--name", lab.name).returncode == 0
        status = json.loads(wgmesh("lab", "status", "--name", lab.name, "--json").stdout)
        assert status["blocked_udp"] == [1]
        assert not echo(lab, "gw1", gw2, "udp", blocked=True)

        done = wgmesh("lab", "unblock-udp", "1", "--name", lab.name)
        assert done.returncode == 0, done.stderr
        assert echo(lab, "gw1", gw2, "udp"), "UDP still blocked after unblock-udp"
        assert echo(lab, "gw1", gw2, "tcp")
        assert wgmesh("lab", "unblock-udp", "1", "--name", lab.name).returncode == 0
        state = load(lab.name)
        assert state is not None
        assert state.blocked_udp == []

    # The other direction: gw2 answering nothing once gw1 drops what arrives.
    lab.refresh()
    lab.block_udp(1)
    with echo_server(lab, "gw1", gw1):
        assert not echo(lab, "gw2", gw1, "udp", blocked=True), "UDP to gw1 passed the block"
        assert echo(lab, "gw2", gw1, "tcp")
    # An unknown site is bad usage, found before anything changes.
    bad = wgmesh("lab", "block-udp", "3", "--name", lab.name)
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"wgmesh: lab {lab.name} has sites 1..2, not 3"


def tcp_connects(lab: Lab, node: str, address: str, port: int) -> bool:
    """Whether `node` opens a TCP connection to `address`:`port` (a budget scaled to the machine: the
    kernel answers a SYN at once, so only a loaded machine's scheduling delays it)."""
    wait = scaled(10.0)
    done = lab.exec(
        node, sys.executable, "-c", CONNECT_CLIENT, address, str(port), str(wait), timeout=wait + 30
    )
    return done.returncode == 0


def tcp_tables(lab: Lab) -> list[int]:
    """The sites whose gateway holds the TCP block's table."""
    return [s.index for s in lab.plan.sites if nft_has_table_in(s.gw_ns, TCP_FAMILY, TCP_TABLE)]


@pytest.mark.lab(sites=3, agents=False, block_tcp_between=[(2, 1)])
def test_tcp_blocked_between_two_gateways_while_udp_and_their_other_tcp_flow(lab: Lab) -> None:
    gw = {i: str(lab.plan.site(i).underlay_ip) for i in (1, 2, 3)}
    hub = str(lab.plan.hub_ip)
    assert lab.state.blocked_tcp == [(1, 2)]
    assert tcp_tables(lab) == [1, 2]  # both gateways of the pair, not the third
    assert "gw1 <-> gw2: TCP blocked between their underlay addresses" in lab.status().switches()
    with ExitStack() as servers:
        for i in (1, 2, 3):
            servers.enter_context(echo_server(lab, f"gw{i}", gw[i]))
        # The echoes that must come back first: the servers answer, so a refusal below is the block's.
        assert echo(lab, "gw1", gw[2], "udp"), "UDP between gw1 and gw2 was blocked too"
        assert echo(lab, "gw2", gw[1], "udp")
        assert echo(lab, "gw1", gw[3], "tcp"), "TCP from gw1 to gw3 was blocked too"
        assert echo(lab, "gw3", gw[2], "tcp"), "TCP from gw3 to gw2 was blocked too"
        assert tcp_connects(lab, "gw1", hub, API_PORT), "TCP from gw1 to the coordinator was blocked"
        if lab.state.relay:
            assert tcp_connects(lab, "gw2", hub, RELAY_PORT), "TCP from gw2 to the relay was blocked"
        assert not echo(lab, "gw1", gw[2], "tcp", blocked=True), "TCP from gw1 to gw2 passed the block"
        assert not echo(lab, "gw2", gw[1], "tcp", blocked=True), "TCP from gw2 to gw1 passed the block"

        # A second pair at run time joins gw1's table; blocking again changes nothing; status shows both.
        done = wgmesh("lab", "block-tcp", "1,3", "2,1", "--name", lab.name)
        assert done.returncode == 0, done.stderr
        assert "gw1 <-> gw3: TCP blocked" in done.stdout
        status = json.loads(wgmesh("lab", "status", "--name", lab.name, "--json").stdout)
        assert status["blocked_tcp"] == [[1, 2], [1, 3]]
        assert tcp_tables(lab) == [1, 2, 3]
        assert not echo(lab, "gw3", gw[1], "tcp", blocked=True), "TCP from gw3 to gw1 passed the block"
        assert echo(lab, "gw3", gw[2], "tcp"), "TCP from gw3 to gw2 was blocked by gw1's pairs"

        # Unblocking one pair lets it through at once and leaves the other in force.
        done = wgmesh("lab", "unblock-tcp", "2,1", "--name", lab.name)
        assert done.returncode == 0, done.stderr
        assert echo(lab, "gw1", gw[2], "tcp"), "TCP from gw1 to gw2 still blocked after unblock-tcp"
        assert echo(lab, "gw2", gw[1], "tcp")
        assert not echo(lab, "gw1", gw[3], "tcp", blocked=True), "unblocking 1,2 lifted 1,3 too"
        assert tcp_tables(lab) == [1, 3]

        # The handle, as tests call it (after the CLI changed the record: refresh).
        lab.refresh()
        lab.unblock_tcp(3, 1)
        lab.unblock_tcp(3, 1)
        assert echo(lab, "gw1", gw[3], "tcp"), "TCP from gw1 to gw3 still blocked after unblock_tcp"
        assert tcp_tables(lab) == []
        lab.block_tcp(2, 3)
        assert not echo(lab, "gw3", gw[2], "tcp", blocked=True), "TCP from gw3 to gw2 passed block_tcp"
        lab.unblock_tcp(2, 3)
        assert echo(lab, "gw3", gw[2], "tcp")
    state = load(lab.name)
    assert state is not None
    assert state.blocked_tcp == []
    # Bad pairs are bad usage, found before anything changes.
    bad = wgmesh("lab", "block-tcp", "1,4", "--name", lab.name)
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"wgmesh: lab {lab.name} has sites 1..3, not 4"
    bad = wgmesh("lab", "block-tcp", "2,2", "--name", lab.name)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "wgmesh: site pair '2,2': a pair is two different sites"
    assert tcp_tables(lab) == []


@contextmanager
def iperf_server(lab: Lab, node: str, address: str) -> Iterator[None]:
    """An iperf3 server on `node`, stopped by its pid afterwards."""
    proc = lab.popen(
        node,
        "iperf3",
        "-s",
        "-B",
        address,
        "-p",
        str(IPERF_PORT),
        "--idle-timeout",
        "10",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            done = lab.exec(node, "ss", "-Hltn", f"src {address}:{IPERF_PORT}")
            return bool(done.stdout.strip())

        wait_until(listening, 10, f"iperf3 on {node}")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def link_rx_bits(lab: Lab, node: str) -> int:
    """Bits the node's underlay link has received so far (its kernel counter, headers included)."""
    done = lab.exec(node, "ip", "-s", "-j", "link", "show", "dev", GATEWAY_UPLINK)
    return int(json.loads(done.stdout)[0]["stats64"]["rx"]["bytes"]) * 8


def iperf(lab: Lab, node: str, address: str, *extra: str, link_of: str | None = None) -> float:
    """Bits per second the receiving side counted, for one iperf3 run from `node`.

    With `link_of` (the receiving node), the bits are those its underlay link received, as the kernel
    counts them: a UDP rate then measures the lab's shaping even when the receiving iperf3, starved of CPU
    on a loaded machine, lets its socket buffer overflow (run 11 of issue 12 read 8.1 Mbit/s through a
    10 Mbit/s throttle that way, under a load average of 6-10 on 2 CPUs).

    iperf3 3.12 hung after a reverse UDP run twice in about five whole-suite runs on a heavily loaded
    machine (never in 24 runs of the same sequence alone, under CPU load): its own receive time-out ends
    such a run, the server starts over when stuck (`--idle-timeout`), and the run is made again. The
    rate asserted is the lab's shaping; a tool that hangs once says nothing about it.
    """
    report: dict[str, Any] = {}

    def ran() -> bool:
        before = link_rx_bits(lab, link_of) if link_of else 0
        try:
            done = lab.exec(
                node,
                *("iperf3", "-c", address, "-p", str(IPERF_PORT), "-J"),
                "--connect-timeout",
                "3000",
                # The receive time-out is for the receiving end only: the client with -R.
                *(("--rcv-timeout", "5000") if "-R" in extra else ()),
                *extra,
                timeout=30,
            )
        except WgmeshError as exc:  # our deadline passed: iperf3 hung
            raise AssertionError(exc.message) from exc
        result: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
        assert done.returncode == 0 and "error" not in result, result.get("error") or done.stderr[-500:]
        report.update(result)
        if link_of:
            report["link_bits"] = link_rx_bits(lab, link_of) - before
        return True

    wait_until(ran, 90, f"an iperf3 run from {node} ({' '.join(extra)})", interval=1)
    received = report["end"]["sum_received"]
    if link_of:
        return float(report["link_bits"]) / float(received["seconds"])
    return float(received["bits_per_second"])


def mbit(bps: float) -> str:
    return f"{bps / 1e6:.1f} Mbit/s"


@pytest.mark.lab(sites=2, agents=False, throttle_udp={1: "10mbit"})
def test_throttled_udp_runs_at_its_rate_while_tcp_does_not(lab: Lab) -> None:
    site = lab.plan.site(1)
    gw2 = str(lab.plan.site(2).underlay_ip)
    assert tc_root_kind(site.gw_ns, GATEWAY_UPLINK) == "htb"
    assert tc_root_kind(None, site.uplink) == "htb"
    udp = ("-u", "-b", "50M", "-t", "3")
    with iperf_server(lab, "gw2", gw2):
        # gw1 -> gw2 is shaped on gw1's eth0; -R (gw2 -> gw1) on the root-side end of gw1's veth.
        up_udp = iperf(lab, "gw1", gw2, *udp, link_of="gw2")
        down_udp = iperf(lab, "gw1", gw2, *udp, "-R", link_of="gw1")
        up_tcp = iperf(lab, "gw1", gw2, "-t", TCP_SECONDS)
        down_tcp = iperf(lab, "gw1", gw2, "-t", TCP_SECONDS, "-R")
        print(
            f"throttle 10mbit: UDP {mbit(up_udp)} out, {mbit(down_udp)} in (offered 50 Mbit/s); "
            f"TCP {mbit(up_tcp)} out, {mbit(down_tcp)} in"
        )
        for what, bps in (("UDP out", up_udp), ("UDP in", down_udp)):
            assert THROTTLE_BAND[0] <= bps <= THROTTLE_BAND[1], f"{what} ran at {mbit(bps)}, not about 10"
        assert min(up_tcp, down_tcp) > TCP_FLOOR, "TCP was shaped too"

        # Runtime switches: a new rate replaces the old one, and unthrottling restores the offered rate.
        assert wgmesh("lab", "throttle-udp", "1", "5mbit", "--name", lab.name).returncode == 0
        five = iperf(lab, "gw1", gw2, *udp, link_of="gw2")
        done = wgmesh("lab", "unthrottle-udp", "1", "--name", lab.name)
        assert done.returncode == 0, done.stderr
        assert wgmesh("lab", "unthrottle-udp", "1", "--name", lab.name).returncode == 0
        free = iperf(lab, "gw1", gw2, *udp, link_of="gw2")
        free_tcp = iperf(lab, "gw1", gw2, "-t", TCP_SECONDS)
        print(
            f"throttle 5mbit: UDP {mbit(five)}; unthrottled: UDP {mbit(free)} (offered 50 Mbit/s), "
            f"TCP {mbit(free_tcp)}"
        )
        assert 4e6 <= five <= 5.5e6
        assert free > 45e6
    assert tc_root_kind(site.gw_ns, GATEWAY_UPLINK) == "noqueue"
    assert tc_root_kind(None, site.uplink) == "noqueue"
    state = load(lab.name)
    assert state is not None
    assert state.throttled_udp == {}


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")


@pytest.mark.skipif(not relay_available(), reason="wgmesh-relay is not installed yet (issue 4's relay)")
@pytest.mark.lab(sites=1, agents=False)
def test_up_starts_the_relay_on_the_hub(lab: Lab) -> None:
    hub = str(lab.plan.hub_ip)
    relay = lab.process("relay")
    assert relay is not None
    assert lab.alive("relay")
    assert listener_pids(hub, RELAY_PORT) == [relay.pid]
    argv = _cmdline(relay.pid)
    assert argv[argv.index("--listen") + 1] == f"{hub}:{RELAY_PORT}"
    assert argv[argv.index("--coordinator-key") + 1] == lab.state.relay_key
    coordinator = lab.process("hub")
    assert coordinator is not None
    announced = f"tls://{hub}:{RELAY_PORT}#{relay_pin(lab.plan)}"  # the relay's own key, pinned
    assert announced in _cmdline(coordinator.pid)
    status = lab.status()
    assert status.relay is True
    assert status.healthy()

    # A lab process like the coordinator: killed and restarted by the handle.
    assert lab.kill("relay")
    assert not lab.alive("relay")
    assert listener_pids(hub, RELAY_PORT) == []
    assert lab.status().relay is False
    lab.start("relay")
    lab.wait_relay()
    restarted = lab.process("relay")
    assert restarted is not None
    assert restarted != relay
    assert listener_pids(hub, RELAY_PORT) == [restarted.pid]


@pytest.fixture
def spare_name(lab_name: str) -> Iterator[str]:
    """A lab name for a test that drives the CLI itself; removed afterwards whatever happened."""
    name = lab_name + "r"
    yield name
    down(name)


def test_up_without_the_relay_program_warns_and_runs_without_it(spare_name: str) -> None:
    env = {**os.environ, "WGMESH_LAB_RELAY": "/nonexistent/wgmesh-relay"}
    refused = wgmesh("lab", "up", "--sites", "1", "--p2p-off", "1", "--name", spare_name, env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "wgmesh: --p2p-off needs the relay, and wgmesh-relay is not installed"
    assert not leftovers(spare_name).any()

    done = wgmesh("lab", "up", "--sites", "1", "--no-agents", "--name", spare_name, "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert f"warning: wgmesh-relay is not installed: lab {spare_name} runs without a relay" in done.stderr
    assert json.loads(done.stdout)["relay"] is None
    status = json.loads(wgmesh("lab", "status", "--name", spare_name, "--json").stdout)
    assert status["relay"] is None
    assert status["healthy"]
    lab = Lab.attach(spare_name)
    assert listener_pids(str(lab.plan.hub_ip), RELAY_PORT) == []
    coordinator = lab.process("hub")
    assert coordinator is not None
    assert "--announce-relay" not in _cmdline(coordinator.pid)


@pytest.mark.skipif(not relay_available(), reason="wgmesh-relay is not installed yet (issue 4's relay)")
@pytest.mark.lab(sites=2, p2p_off=[2])
def test_p2p_off_is_set_through_the_coordinator_once_enrolled(lab: Lab) -> None:
    assert lab.api("GET", "/api/v1/nodes/gw2")["p2p"] == "off"
    assert lab.api("GET", "/api/v1/nodes/gw1")["p2p"] == "auto"
    assert lab.status().p2p_off == [2]
    # The mesh converged (handshakes on every pair) with gw2 on p2p off; the VPC hosts reach each other.
    # Which path the pair took is the agent's business (issue 4's path tests), not the lab's.
    matrix = lab.ping_matrix(count=2)
    assert all(rtt is not None for rtt in matrix.values()), matrix
