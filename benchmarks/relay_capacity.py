"""Relay capacity: 1,400-byte data frames forwarded by a real `wgmesh-relay` between synthetic node pairs.

Run: `.venv/bin/python benchmarks/relay_capacity.py [--seconds 4] [--pairs 1 4] [--paced 40000]`.
Starts one relay process on 127.0.0.1 per tier, and per pair two client processes that each blast frames
to the other (both directions) and count what arrives, so the relay is the thing measured. Prints, per
tier, frames/s and Mbit/s of datagrams delivered, the relay's drops, and the relay's CPU% (from
/proc/PID/stat, 100 % = one core: the relay is one thread). The paced tier sends a fixed rate each way to
show the relay's cost at a realistic load (wireguard-go tops out near 36 k frames/s, docs/relay-protocol.md).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

from wgmesh.relay import protocol as p
from wgmesh.relay.tickets import generate_signing_key, issue_ticket, public_key_of

DATAGRAM = 1400
FRAME = DATAGRAM + 8
BATCH = 32
"""Frames per sendall: a shim gathers what WireGuard handed it since the last write."""
RELAY_BIN = str(Path(sys.executable).with_name("wgmesh-relay"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    tier: str
    frames_per_s: float
    mbit_per_s: float
    drop_pct: float
    cpu_pct: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat (fields 14 and 15, after the command name)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def end_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `grace` seconds (the benchmarks' own processes)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def client(
    port: int,
    node: int,
    peer: int,
    ticket: str,
    rate: float,
    received: Synchronized[int],
    ready: Barrier,
    stop: Event,
) -> None:
    """One synthetic node: hello, then send frames to `peer` (paced if rate > 0) while counting arrivals."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(p.encode(p.Hello(node_id=node, ticket=ticket)))
    decoder = p.FrameDecoder()
    frames: list[p.Frame] = []
    while not frames:
        frames = decoder.feed(sock.recv(4096))
    assert isinstance(frames[0], p.HelloOk), frames[0]
    batch = p.encode_data(peer, os.urandom(DATAGRAM)) * BATCH
    # Nobody sends before every node is connected, so drops count only frames the relay could not queue.
    ready.wait(10)

    def send() -> None:
        start = time.monotonic()
        sent = 0
        try:
            while not stop.is_set():
                if rate > 0:
                    ahead = start + sent / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                sock.sendall(batch)
                sent += BATCH
        except OSError:
            pass

    threading.Thread(target=send, daemon=True).start()
    buf = bytearray(1 << 20)
    # Counting bytes, not decoding: the client must stay cheap so the relay is the bottleneck.
    sock.settimeout(0.5)
    while not stop.is_set():
        try:
            n = sock.recv_into(buf)
        except TimeoutError:
            continue
        if not n:
            break
        received.value += n
    sock.close()


def run_tier(tier: str, pairs: int, seconds: float, rate: float, warmup: float = 1.0) -> Result:
    """One relay process and `pairs` pairs of clients; measures the window after `warmup`."""
    key = generate_signing_key()
    port = free_port()
    with tempfile.TemporaryFile() as log:
        relay = subprocess.Popen(
            [
                RELAY_BIN,
                "--listen",
                f"127.0.0.1:{port}",
                "--coordinator-key",
                public_key_of(key),
                # The relay's forwarding alone, as before relays served TLS by default (its clients are
                # plain sockets); TLS's cost on the relayed path is measured by relay_path.py.
                "--plain-tcp",
                "--stats-interval",
                "3600",
            ],
            stderr=log,
        )
        ctx = mp.get_context("fork")
        stop = ctx.Event()
        ready = ctx.Barrier(2 * pairs + 1)
        procs: list[mp.process.BaseProcess] = []
        counters: list[Synchronized[int]] = []
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port)).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or relay.poll() is not None:
                        raise SystemExit("relay did not start") from None
                    time.sleep(0.05)
            per_sender = rate / pairs if rate else 0.0
            for i in range(pairs):
                a, b = 2 * i + 1, 2 * i + 2
                for node, peer in ((a, b), (b, a)):
                    counter: Synchronized[int] = ctx.Value("q", 0, lock=False)  # type: ignore[assignment]
                    ticket = issue_ticket(key, node, 3600, time.time())
                    proc = ctx.Process(
                        target=client, args=(port, node, peer, ticket, per_sender, counter, ready, stop)
                    )
                    proc.start()
                    procs.append(proc)
                    counters.append(counter)
            ready.wait(10)
            time.sleep(warmup)
            bytes0, cpu0, t0 = sum(c.value for c in counters), cpu_seconds(relay.pid), time.monotonic()
            time.sleep(seconds)
            bytes1, cpu1, t1 = sum(c.value for c in counters), cpu_seconds(relay.pid), time.monotonic()
        finally:
            stop.set()
            for proc in procs:
                proc.join(3)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
            end_process(relay)
        log.seek(0)
        text = log.read().decode()
    stopped = [line for line in text.splitlines() if "event=stopped" in line]
    counts = dict(re.findall(r"(\w+)=(\d+)", stopped[-1])) if stopped else {}
    forwarded = int(counts.get("frames_forwarded", 0))
    dropped = sum(int(v) for k, v in counts.items() if k.startswith("dropped_"))
    wall = t1 - t0
    frames = (bytes1 - bytes0) / FRAME / wall
    return Result(
        tier=tier,
        frames_per_s=frames,
        mbit_per_s=frames * DATAGRAM * 8 / 1e6,
        drop_pct=100 * dropped / max(1, forwarded + dropped),
        cpu_pct=100 * (cpu1 - cpu0) / wall,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measurement window per tier")
    parser.add_argument(
        "--pairs", type=int, nargs="+", default=[1, 4], help="pair counts to measure at full blast"
    )
    parser.add_argument(
        "--paced",
        type=float,
        default=40_000,
        help="also measure 1 pair at this many frames/s each way (0 to skip)",
    )
    args = parser.parse_args()
    results = [run_tier(f"{n} pair{'s' if n > 1 else ''}, blast", n, args.seconds, 0.0) for n in args.pairs]
    if args.paced:
        results.append(run_tier(f"1 pair, {args.paced / 1000:g}k/s each way", 1, args.seconds, args.paced))
    print(
        f"{os.cpu_count()} CPUs; {DATAGRAM}-byte datagrams; frames/s and Mbit/s delivered, both directions summed"
    )
    print(f"{'tier':<30}{'frames/s':>12}{'Mbit/s':>10}{'drops %':>9}{'relay CPU %':>13}{'frames/CPU-s':>14}")
    for r in results:
        per_cpu = r.frames_per_s / (r.cpu_pct / 100) if r.cpu_pct else 0.0
        print(
            f"{r.tier:<30}{r.frames_per_s:>12,.0f}{r.mbit_per_s:>10,.0f}{r.drop_pct:>9.2f}{r.cpu_pct:>13.0f}{per_cpu:>14,.0f}"
        )
    if len(results) > 1 and results[0].frames_per_s:
        for r in results[1:]:
            print(f"{r.tier} / {results[0].tier}: {r.frames_per_s / results[0].frames_per_s:.2f}x frames/s")


if __name__ == "__main__":
    sys.exit(main())
