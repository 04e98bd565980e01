"""Helpers for the path and relay tests in the lab: each gateway's view of its peers' paths, continuous
pings with their longest silence, a TCP stream that must survive path switches, a TCP transfer that
must arrive whole within a deadline, and the operator's and the agent's command lines run against it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wgmesh.errors import NotFoundError
from wgmesh.lab import Lab, Site, WaitTimeout, wait_until
from wgmesh.lab.pings import ContinuousPing
from wgmesh.lab.timescale import scaled

CLI = [sys.executable, "-c", "from wgmesh.cli.main import main; main()"]
AGENT = [sys.executable, "-c", "from wgmesh.agent.main import main; main()"]


def run_cli(argv: list[str], lab: Lab, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    """`argv` (CLI or AGENT and its arguments) from the host, as an admin of `lab` with nothing else set."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "WGMESH_URL": lab.url,
        "WGMESH_TOKEN": lab.admin_token,
        "WGMESH_PIN": lab.pin,
    }
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)


@dataclass(frozen=True)
class PeerPath:
    path: str | None
    reason: str | None
    rtt_ms: float | None
    relay: str | None
    endpoint: str | None


def last_report(lab: Lab, node: str) -> dict[str, Any]:
    """The gateway's latest status report; {} before its first, which may come after the lab has converged
    (a lab converges on handshakes; CI run 29 read the status in between), so a wait on it goes on."""
    try:
        status = lab.api("GET", f"/api/v1/nodes/{node}/status")
    except NotFoundError as exc:
        if exc.code != "no_status":
            raise
        return {}
    assert isinstance(status, dict)
    report = status.get("report") or {}
    assert isinstance(report, dict)
    return report


def paths(lab: Lab, node: str) -> dict[str, PeerPath]:
    """The gateway's latest status report, by peer name (reports follow a switch within a second)."""
    names = {n["public_key"]: n["name"] for n in lab.api("GET", "/api/v1/nodes")["nodes"]}
    report = last_report(lab, node)
    out = {}
    for peer in report.get("peers", []):
        out[names.get(peer["public_key"], peer["public_key"])] = PeerPath(
            peer.get("path"), peer.get("reason"), peer.get("rtt_ms"), peer.get("relay"), peer.get("endpoint")
        )
    return out


def path_of(lab: Lab, node: str, peer: str) -> str | None:
    """One peer's path as `node` reports it."""
    found = paths(lab, node).get(peer)
    return found.path if found else None


def both_on(lab: Lab, a: str, b: str, path: str) -> bool:
    """Whether `a` and `b` each report the other on `path`; an AssertionError says what they report."""
    seen_a, seen_b = paths(lab, a).get(b), paths(lab, b).get(a)
    if seen_a is not None and seen_b is not None and seen_a.path == seen_b.path == path:
        return True
    raise AssertionError(f"{a} reports {b}: {seen_a}; {b} reports {a}: {seen_b}")


def gap_across(ping: ContinuousPing, since: float, switched_after: float) -> float:
    """After a path switch that both agents reported `switched_after` s after `since` (unix time): wait
    until pings are answered again and two more seconds of replies came, then the longest silence from a
    second before `since`."""
    wait_until(lambda: (ping.last_reply() or 0) > since + switched_after, 10, "pings answered again")
    settled = time.time()
    wait_until(lambda: ping.replies_since(settled) >= 20, 10, "two more seconds of replies")
    return ping.longest_gap(since=since - 1)


def ping_ok(lab: Lab, src: str, dst: object, count: int = 2) -> bool:
    done = lab.exec(src, "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "2", str(dst))
    return done.returncode == 0


STREAM_SERVER = """
import hashlib, socket, sys
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
conn, _ = srv.accept()
digest, total = hashlib.sha256(), 0
while chunk := conn.recv(65536):
    digest.update(chunk); total += len(chunk)
print(total, digest.hexdigest(), flush=True)
"""

# Sends 32 KiB every 20 ms (about 13 Mbit/s) until the stop file appears, then reports what it sent.
STREAM_CLIENT = """
import hashlib, os, socket, sys, time
digest, total = hashlib.sha256(), 0
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=90) as conn:
    while not os.path.exists(sys.argv[3]):
        chunk = os.urandom(32768)
        conn.sendall(chunk)
        digest.update(chunk); total += len(chunk)
        time.sleep(0.02)
print(total, digest.hexdigest(), flush=True)
"""


# Sends argv[3] random bytes at once, then reports what it sent; argv[4] is its socket timeout in seconds.
TCP_CLIENT = """
import hashlib, os, socket, sys
data = os.urandom(int(sys.argv[3]))
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4])) as conn:
    conn.sendall(data)
print(len(data), hashlib.sha256(data).hexdigest())
"""


def tcp_info(lab: Lab, node: str, port: int, side: str) -> dict[str, str]:
    """The kernel's TCP_INFO (`ss -ti`) of `node`'s connection on `port` (`side`: sport or dport), as
    {field: value}; empty when there is no such connection."""
    done = lab.exec(node, "ss", "-Htin", f"( {side} = :{port} )")
    info: dict[str, str] = {}
    for token in done.stdout.split():
        key, sep, value = token.partition(":")
        if sep and key.isidentifier() and key not in info:
            info[key] = value
    return info


def tcp_transfer(
    lab: Lab,
    src: Site,
    dst: Site,
    size: int = 4 << 20,
    port: int = 5201,
    *,
    timeout: float = 60.0,
    stall: float = 10.0,
    address: str | None = None,
) -> float:
    """Send `size` random bytes from one VPC host to another over TCP (at `address`, its alias, else at
    its own address), check that byte count and digest arrived intact, and return the seconds it took.

    Fails saying how many bytes arrived when nothing new arrives for `stall` seconds (a TCP black hole
    does not recover by itself) or the whole transfer takes longer than `timeout`; the sender's TCP_INFO
    (MSS, path MTU, retransmissions) is in the message.
    """
    server = lab.popen(dst.host, sys.executable, "-c", STREAM_SERVER, str(port), stdout=subprocess.PIPE)
    client: subprocess.Popen[str] | None = None
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        start = time.monotonic()
        client = lab.popen(
            src.host,
            sys.executable,
            "-c",
            TCP_CLIENT,
            address if address is not None else str(dst.vm_ip),
            str(port),
            str(size),
            str(scaled(timeout + 10)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # The receiver only speaks at the end, so progress is read from its kernel: bytes_received.
        progress = {"bytes": 0, "at": start}

        def finished_or_stalled() -> bool:
            if server.poll() is not None:
                return True
            got = int(tcp_info(lab, dst.host, port, "sport").get("bytes_received", "0"))
            now = time.monotonic()
            if got > progress["bytes"]:
                progress.update(bytes=got, at=now)
            return now - progress["at"] >= scaled(stall)

        with contextlib.suppress(WaitTimeout):
            wait_until(finished_or_stalled, timeout, f"{size} bytes from {src.host}", interval=0.25)
        if server.poll() is None:
            got = int(tcp_info(lab, dst.host, port, "sport").get("bytes_received", "0"))
            sender = tcp_info(lab, src.host, port, "dport")
            seen = " ".join(f"{k}:{sender[k]}" for k in SENDER_FIELDS if k in sender) or "no connection"
            raise AssertionError(
                f"TCP {src.host} -> {dst.host} stalled: {got} of {size} bytes arrived in "
                f"{time.monotonic() - start:.1f} s, none in the last "
                f"{time.monotonic() - progress['at']:.1f} s (sender {seen})"
            )
        took = time.monotonic() - start
        sent, errors = client.communicate(timeout=scaled(10))
        assert client.returncode == 0, f"TCP sender on {src.host} failed: {errors.strip()[-500:]}"
        received, _ = server.communicate(timeout=scaled(10))
    finally:
        for proc in (client, server):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    assert received.split() == sent.split(), f"{src.host} -> {dst.host}: sent {sent!r}, got {received!r}"
    return took


# What a stalled sender's TCP_INFO says about why: the segment size it uses, the path MTU it believes,
# and how much it had to send again.
SENDER_FIELDS = ("mss", "pmtu", "retrans", "unacked", "lost", "bytes_sent", "bytes_acked", "bytes_retrans")


class TcpStream:
    """One long TCP connection between two VPC hosts carrying random data; `finish()` checks it arrived whole."""

    def __init__(self, lab: Lab, src: Site, dst: Site, stop_file: Path, port: int = 5301) -> None:
        self.stop_file = stop_file
        self.server = lab.popen(
            dst.host, sys.executable, "-c", STREAM_SERVER, str(port), stdout=subprocess.PIPE
        )
        assert self.server.stdout is not None
        assert self.server.stdout.readline().strip() == "ready"
        self.client = lab.popen(
            src.host,
            sys.executable,
            "-c",
            STREAM_CLIENT,
            str(dst.vm_ip),
            str(port),
            str(stop_file),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def alive(self) -> bool:
        return self.client.poll() is None

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Stop sending and return (bytes, sha256) once the receiver got exactly what was sent."""
        self.stop_file.touch()
        timeout = scaled(timeout)
        sent_out, sent_err = self.client.communicate(timeout=timeout)
        assert self.client.returncode == 0, f"TCP sender failed: {sent_err}"
        received_out, _ = self.server.communicate(timeout=timeout)
        assert sent_out.split() == received_out.split(), (sent_out, received_out)
        total, digest = sent_out.split()
        return int(total), digest

    def kill(self) -> None:
        for proc in (self.client, self.server):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)


def iperf3(lab: Lab, src: Site, dst: Site, seconds: int = 5, port: int = 5201) -> float:
    """TCP goodput in bit/s from one VPC host to another, as the iperf3 receiver measured it."""
    server = lab.popen(dst.host, "iperf3", "-s", "-p", str(port), stdout=subprocess.DEVNULL)
    received: dict[str, Any] = {}

    def measured() -> bool:
        # Retried: the server may not listen yet.
        done = lab.exec(src.host, "iperf3", "-J", "-c", str(dst.vm_ip), "-p", str(port), "-t", str(seconds))
        result: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
        found = result.get("end", {}).get("sum_received")
        assert found is not None, result.get("error") or done.stderr[-2000:]
        received.update(found)
        return True

    try:
        wait_until(measured, 10, f"iperf3 from {src.host} to {dst.host}", interval=0.3)
        return float(received["bits_per_second"])
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=5)
