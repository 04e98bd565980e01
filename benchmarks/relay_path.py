"""Path throughput in the lab: VPC host → VPC host over direct UDP, direct TCP, the relay, and a udptunnel
reference.

Run as root: `.venv/bin/python benchmarks/relay_path.py [--seconds 5]`.
Builds its own four-site lab (name `brp`) with P2P off at gw3 and UDP blocked at gw4, so the agents put
gw1-gw2 on the direct UDP path, gw1-gw3 on the hub's relay and gw1-gw4 on TCP straight between the two
gateways (issue 21), and waits until they report exactly that. In the same run it measures, with iperf3
TCP and ping:

(a) vm1 → vm2 over the direct path (wireguard-go, UDP on the underlay);
(d) vm1 → vm4 over direct TCP (wireguard-go → agent shim → TLS → agent shim of gw4, no relay);
(b) vm1 → vm3 over the relay path (wireguard-go → agent shim → TCP → wgmesh-relay → TCP → agent shim);
(c) a reference for (b): vm1 → vm3 through a second wireguard-go pair (`brp-ux1` in gw1, `brp-ux3` in gw3)
    carried by Debian's `udptunnel` (a C UDP-over-TCP forwarder, point to point). udptunnel binds the same
    UDP port it sends to, so each side runs in its own namespace (`brp-ut1`, `brp-ut3`) behind a veth to its
    gateway; the TCP connection goes ut1 → gw1 → underlay → gw3 → ut3. The VPC hosts reach each other on
    extra addresses (100.96.I.10) routed through the udptunnel pair, so (b) and (c) cross the same
    namespaces and forwarding hops.

Prints Mbit/s, average RTT, the ratios direct TCP/direct, relay/direct and relay/udptunnel, the idle RTT
each path adds to direct UDP's, and the CPU time each process on
the path used during each run (utime + stime from /proc/PID/stat; 100 % = one core). Tears everything
down in any case (its own processes by pid, then the lab).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from wgmesh.errors import WgmeshError
from wgmesh.lab import Lab, NotYet, WaitTimeout, down, up, wait_until

LAB_NAME = "brp"
TCP_DIRECT_TARGET = 0.85
"""Direct TCP / direct UDP throughput (issue 21)."""
RELAY_TARGET = 0.8
"""Relay / direct UDP throughput (issue 21)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
UT_TCP_PORT = 5400
UT_UDP_PORT = 31900  # below the ephemeral range: the agents' shim sockets take ports there
MTU = 1420  # the mesh interfaces' MTU (wgmesh/agent/dataplane.py), so (c) carries the same packets


# --- observing the lab ----------------------------------------------------------------------------


def peer_paths(lab: Lab, node: str) -> dict[str, str | None]:
    """The gateway's latest reported path per peer name."""
    names = {n["public_key"]: n["name"] for n in lab.api("GET", "/api/v1/nodes")["nodes"]}
    report = lab.api("GET", f"/api/v1/nodes/{node}/status").get("report") or {}
    return {names.get(p["public_key"], p["public_key"]): p.get("path") for p in report.get("peers", [])}


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `check` every 0.2 s; the seconds it took, or SystemExit naming `what`.

    The lab's one wait (scaled to the machine); the API's errors and a report's missing key mean
    that the lab is still coming up.
    """
    try:
        return wait_until(check, timeout, what, interval=0.2, not_yet=(WgmeshError, KeyError))
    except WaitTimeout as exc:
        raise SystemExit(str(exc)) from exc


def wait_paths(lab: Lab, expected: dict[tuple[str, str], str], timeout: float = 60) -> None:
    """Wait until every (node, peer) reports its expected path."""

    def ok() -> bool:
        reports = {node: peer_paths(lab, node) for node in {n for n, _ in expected}}
        return all(reports[node].get(peer) == path for (node, peer), path in expected.items())

    wait_for(ok, timeout, ", ".join(f"{n}→{p} {path}" for (n, p), path in expected.items()))


# --- CPU accounting -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat, after the command name)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wireguard_go_pid(namespace: str, ifname: str) -> int:
    """The pid of the wireguard-go serving `ifname` inside `namespace`."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True)
    for pid in pids.stdout.split():
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if Path(argv[0].decode()).name == "wireguard-go" and ifname.encode() in argv:
                return int(pid)
    raise SystemExit(f"no wireguard-go for {ifname} in {namespace}")


@contextlib.contextmanager
def cpu_use(pids: dict[str, int]) -> Iterator[dict[str, float]]:
    """Fills the yielded dict with each process's CPU share (1.0 = one core) over the `with` block."""
    shares: dict[str, float] = {}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    yield shares
    wall = time.monotonic() - t0
    for name, pid in pids.items():
        shares[name] = (cpu_seconds(pid) - before[name]) / wall


# --- measuring ------------------------------------------------------------------------------------


def iperf(
    lab: Lab, client: str, server: str, address: str, seconds: int, port: int, *extra: str
) -> float | None:
    """Mbit/s received in one iperf3 TCP run from `client` to `address` (served on `server`); None when the
    run did not finish (the path stalled)."""
    srv = lab.popen(
        server, "iperf3", "-s", "-p", str(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    result: list[float | None] = []

    def ran() -> bool:
        try:
            done = lab.exec(
                client,
                *("iperf3", "-J", "-c", address, "-p", str(port), "-t", str(seconds), *extra),
                timeout=seconds + 30,
            )
        except WgmeshError as exc:
            if exc.code != "timeout":
                raise
            result.append(None)
            return True
        end = json.loads(done.stdout or "{}").get("end", {}) if done.returncode == 0 else {}
        if "sum_received" not in end:
            # The server may not be listening yet.
            raise NotYet(f"iperf3 {client} -> {address} failed: {done.stdout[-300:]}{done.stderr[-300:]}")
        result.append(float(end["sum_received"]["bits_per_second"]) / 1e6)
        return True

    try:
        try:
            wait_until(ran, 10, f"iperf3 {client} -> {address}", interval=0.2)
        except WaitTimeout as exc:
            raise SystemExit(str(exc)) from exc
        return result[0]
    finally:
        srv.kill()
        srv.wait()


def ping_rtt(lab: Lab, client: str, address: str) -> float:
    """Average RTT in ms over 20 pings, 0.2 s apart."""
    out = lab.exec(client, "ping", "-n", "-q", "-c", "20", "-i", "0.2", address, check=True).stdout
    return float(out.rsplit("=", 1)[1].split("/")[1])


@dataclass
class Run:
    name: str
    mbit: float | None
    rtt: float
    cpu: dict[str, float]
    note: str = ""


def measure(
    lab: Lab,
    name: str,
    dst_host: str,
    address: str,
    pids: dict[str, int],
    seconds: int,
    port: int,
    *extra: str,
) -> Run:
    """RTT first (a path that breaks under load still gets its idle RTT), then iperf3 with CPU accounting."""
    rtt = ping_rtt(lab, "vm1", address)
    with cpu_use(pids) as cpu:
        mbit = iperf(lab, "vm1", dst_host, address, seconds, port, *extra)
    after = lab.exec("vm1", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", address)
    note = "" if after.returncode == 0 else "path dead after the run"
    if mbit is None:
        note = f"iperf3 stalled (no result in {seconds + 30} s); {note or 'path still answers pings'}"
    return Run(name, mbit, rtt, cpu, note)


# --- the udptunnel reference ----------------------------------------------------------------------


def sh(*argv: str) -> None:
    """Run a command, raising with its stderr on failure."""
    done = subprocess.run(list(argv), check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {done.stderr.strip()}")


class Udptunnel:
    """A wireguard-go pair between gw1 and gw3 whose UDP is carried by udptunnel over one TCP connection."""

    def __init__(self, lab: Lab, a: int, b: int) -> None:
        self.lab = lab
        self.sites = (lab.plan.site(a), lab.plan.site(b))
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.namespaces: list[str] = []
        self.interfaces: list[tuple[str, str]] = []  # (namespace, wireguard-go interface)

    def ut_ns(self, i: int) -> str:
        return f"{self.lab.name}-ut{i}"

    def wg_if(self, i: int) -> str:
        return f"{self.lab.name}-ux{i}"

    def build(self) -> None:
        sa, sb = self.sites
        keys = {}
        for site in self.sites:
            private = subprocess.run(
                ["wg", "genkey"], capture_output=True, text=True, check=True
            ).stdout.strip()
            public = subprocess.run(
                ["wg", "pubkey"], input=private, capture_output=True, text=True, check=True
            ).stdout.strip()
            keys[site.index] = (private, public)
        for site, peer in ((sa, sb), (sb, sa)):
            i, ns, gw = site.index, self.ut_ns(site.index), site.gw_ns
            veth_gw, veth_ut = f"{self.lab.name}-u{i}a", f"{self.lab.name}-u{i}b"
            # A namespace for udptunnel, joined to the gateway by a veth: 100.64.I.1 (gw) to 100.64.I.2 (ut).
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            sh("ip", "-n", gw, "link", "add", veth_gw, "type", "veth", "peer", "name", veth_ut, "netns", ns)
            for where, dev, addr in ((gw, veth_gw, f"100.64.{i}.1/30"), (ns, veth_ut, f"100.64.{i}.2/30")):
                sh("ip", "-n", where, "link", "set", dev, "addrgenmode", "none")
                sh("ip", "-n", where, "addr", "add", addr, "dev", dev)
                sh("ip", "-n", where, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"100.64.{i}.1")
            # udptunnel receives on PORT but sends from a second, ephemeral-port socket; WireGuard would roam
            # its peer onto that port, which udptunnel never reads. Rewrite the source port (stateless).
            script = (
                "table ip udptunnel {\n  chain out {\n    type filter hook output priority raw;\n"
                f'    oifname "{veth_ut}" udp dport {UT_UDP_PORT} notrack udp sport set {UT_UDP_PORT}\n'
                "  }\n}\n"
            )
            done = subprocess.run(
                ["ip", "netns", "exec", ns, "nft", "-f", "-"],
                input=script,
                check=False,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(f"nft in {ns}: {done.stderr.strip()}")
            # The TCP connection crosses the underlay: each gateway routes the other's ut /30 via its peer.
            sh("ip", "-n", gw, "route", "add", f"100.64.{peer.index}.0/30", "via", str(peer.underlay_ip))
            # The WireGuard interface, listening where the local udptunnel sends (100.64.I.1:PORT).
            ifname = self.wg_if(i)
            self.procs[ifname] = self.lab.popen(
                site.node,
                "wireguard-go",
                "-f",
                ifname,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.interfaces.append((gw, ifname))
            sock = Path(f"/var/run/wireguard/{ifname}.sock")
            wait_for(sock.exists, 10, f"{sock}")
            self.lab.exec(
                site.node,
                "wg",
                "set",
                ifname,
                "listen-port",
                str(UT_UDP_PORT),
                "private-key",
                "/dev/stdin",
                "peer",
                keys[peer.index][1],
                "endpoint",
                f"100.64.{i}.2:{UT_UDP_PORT}",
                "allowed-ips",
                f"100.65.0.{peer.index}/32,100.96.{peer.index}.0/24",
                check=True,
                input=keys[i][0],
            )
            sh("ip", "-n", gw, "addr", "add", f"100.65.0.{i}/24", "dev", ifname)
            sh("ip", "-n", gw, "link", "set", ifname, "mtu", str(MTU), "up")
            sh("ip", "-n", gw, "route", "add", f"100.96.{peer.index}.0/24", "dev", ifname)
            # The VPC host's extra address, reached over the LAN and routed through this pair.
            sh("ip", "-n", site.vm_ns, "addr", "add", f"100.96.{i}.10/32", "dev", "eth0")
            sh("ip", "-n", site.vm_ns, "route", "add", f"100.96.{peer.index}.0/24", "via", str(site.gw_lan_ip),
               "src", f"100.96.{i}.10")  # fmt: skip
            sh("ip", "-n", gw, "route", "add", f"100.96.{i}.10/32", "via", str(site.vm_ip), "dev", "lan")
        # udptunnel: server in ut(b), client in ut(a) connecting to it across the underlay.
        self.procs["udptunnel-s"] = subprocess.Popen(
            ["ip", "netns", "exec", self.ut_ns(sb.index), "udptunnel", "-s", str(UT_TCP_PORT),
             f"100.64.{sb.index}.1/{UT_UDP_PORT}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

        def listening() -> bool:
            out = subprocess.run(
                ["ip", "netns", "exec", self.ut_ns(sb.index), "ss", "-Hltn", f"sport = :{UT_TCP_PORT}"],
                check=False,
                capture_output=True,
                text=True,
            ).stdout
            return bool(out.strip())

        wait_for(listening, 10, "udptunnel server listening")
        self.procs["udptunnel-c"] = subprocess.Popen(
            ["ip", "netns", "exec", self.ut_ns(sa.index), "udptunnel", "-c", f"100.64.{sb.index}.2/{UT_TCP_PORT}",
             f"100.64.{sa.index}.1/{UT_UDP_PORT}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        target = f"100.96.{sb.index}.10"
        wait_for(
            lambda: self.lab.exec(sa.host, "ping", "-n", "-q", "-c", "1", "-W", "1", target).returncode == 0,
            20,
            f"vm{sa.index} reaching {target} over udptunnel",
        )
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}")

    def pids(self) -> dict[str, int]:
        return {
            f"wireguard-go {self.wg_if(s.index)}": self.procs[self.wg_if(s.index)].pid for s in self.sites
        } | {
            "udptunnel client": self.procs["udptunnel-c"].pid,
            "udptunnel server": self.procs["udptunnel-s"].pid,
        }

    def close(self) -> None:
        """Stop what this started, by pid, then remove its interfaces, sockets and namespaces."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for ns, ifname in self.interfaces:
            subprocess.run(["ip", "-n", ns, "link", "del", ifname], check=False, capture_output=True)
            Path(f"/var/run/wireguard/{ifname}.sock").unlink(missing_ok=True)
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 duration per path")
    parser.add_argument(
        "--udptunnel-rate",
        default="",
        help="pace the udptunnel run (iperf3 -b, e.g. 100M); default: as fast as it goes",
    )
    args = parser.parse_args()
    down(LAB_NAME)
    tunnel: Udptunnel | None = None
    try:
        lab = up(LAB_NAME, 4, "userspace", timeout=120, relay=True, p2p_off=[3], block_udp=[4])
        tunnel = Udptunnel(lab, 1, 3)
        p = lab.plan
        s1, s2, s3, s4 = p.site(1), p.site(2), p.site(3), p.site(4)
        expected = {
            ("gw1", "gw2"): "direct",
            ("gw2", "gw1"): "direct",
            ("gw1", "gw3"): "relay",
            ("gw3", "gw1"): "relay",
            ("gw1", "gw4"): "tcp-direct",
            ("gw4", "gw1"): "tcp-direct",
        }
        wait_paths(lab, expected)
        wg = {s.index: wireguard_go_pid(s.gw_ns, s.wg_interface) for s in (s1, s2, s3, s4)}

        def agent(node: str) -> int:
            proc = lab.process(node)
            if proc is None:
                raise SystemExit(f"no process recorded for {node}")
            return proc.pid

        direct = measure(
            lab,
            "(a) vm1 → vm2, direct UDP",
            "vm2",
            str(s2.vm_ip),
            {
                "agent gw1": agent("gw1"),
                "agent gw2": agent("gw2"),
                "wireguard-go gw1": wg[1],
                "wireguard-go gw2": wg[2],
            },
            args.seconds,
            5311,
        )
        tcp_direct = measure(
            lab,
            "(d) vm1 → vm4, direct TCP",
            "vm4",
            str(s4.vm_ip),
            {
                "agent gw1": agent("gw1"),
                "agent gw4": agent("gw4"),
                "wireguard-go gw1": wg[1],
                "wireguard-go gw4": wg[4],
            },
            args.seconds,
            5314,
        )
        relay = measure(
            lab,
            "(b) vm1 → vm3, relay",
            "vm3",
            str(s3.vm_ip),
            {
                "relay": agent("relay"),
                "agent gw1": agent("gw1"),
                "agent gw3": agent("gw3"),
                "wireguard-go gw1": wg[1],
                "wireguard-go gw3": wg[3],
            },
            args.seconds,
            5312,
        )
        # The paths must not have moved while measuring.
        wait_paths(lab, expected, timeout=5)
        tunnel.build()
        extra = ("-b", args.udptunnel_rate) if args.udptunnel_rate else ()
        reference = measure(
            lab, "(c) vm1 → vm3, udptunnel", "vm3", "100.96.3.10", tunnel.pids(), args.seconds, 5313, *extra
        )
    finally:
        if tunnel is not None:
            tunnel.close()
        down(LAB_NAME)

    runs = [direct, tcp_direct, relay, reference]
    print(
        f"{os.cpu_count()} CPUs, wireguard-go, iperf3 TCP {args.seconds} s, ping -c 20 -i 0.2 (before iperf3)"
    )
    if args.udptunnel_rate:
        print(f"(c) paced at {args.udptunnel_rate} (iperf3 -b)")
    print(f"{'path':<30}{'Mbit/s':>10}{'RTT ms':>10}")
    for run in runs:
        mbit = f"{run.mbit:>10.1f}" if run.mbit is not None else f"{'-':>10}"
        print(f"{run.name:<30}{mbit}{run.rtt:>10.3f}  {run.note}")

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.3f}" if a is not None and b else "n/a"

    def verdict(run: Run, target: float) -> str:
        met = run.mbit is not None and direct.mbit is not None and run.mbit >= target * direct.mbit
        return f"target >= {target}: {'met' if met else 'NOT met'}"

    print(
        f"direct TCP / direct UDP throughput: {ratio(tcp_direct.mbit, direct.mbit)} ({verdict(tcp_direct, TCP_DIRECT_TARGET)})"
    )
    print(
        f"relay / direct UDP throughput:      {ratio(relay.mbit, direct.mbit)} ({verdict(relay, RELAY_TARGET)})"
    )
    print(f"relay / udptunnel throughput:       {ratio(relay.mbit, reference.mbit)}")
    print(
        f"added idle RTT vs direct UDP: direct TCP {tcp_direct.rtt - direct.rtt:+.3f} ms, relay "
        f"{relay.rtt - direct.rtt:+.3f} ms; relay vs udptunnel: {relay.rtt - reference.rtt:+.3f} ms"
    )
    print("CPU during each iperf3 run (% of one core):")
    for run in runs:
        parts = ", ".join(f"{name} {100 * share:.0f}" for name, share in run.cpu.items())
        print(f"  {run.name}: {parts}; total {100 * sum(run.cpu.values()):.0f}")


if __name__ == "__main__":
    sys.exit(main())
