"""Relay abuse: 2,000 idle connections and a ping flood that is never read, against a relayed ping.

Run: `nice -n 15 .venv/bin/python benchmarks/relay_abuse.py [--seconds 20] [--idle 2000] [--plain-tcp]`.
Starts one `wgmesh-relay` on 127.0.0.1 (TLS with its own key unless --plain-tcp) and, for the whole
window:
- a valid relayed ping: node 1 sends node 2 a frame every 50 ms, node 2 echoes it back through the relay;
- `--idle` connections that never send a byte, spread over 127.0.0.0/8 source addresses (16 per address,
  the relay's per-address cap), each reopened as soon as the relay closes it (the hello deadline);
- a ticket holder (node 3) sending pings as fast as it can without ever reading, reconnecting whenever the
  relay drops it.
Prints the ping's longest gap between echoes (target: under 1 s) and its losses, the relay's peak RSS
(VmHWM, target: under 200 MB), how often the flooder was dropped and how many idle connections were open.
Before issue 16 the flood alone grew the relay from 40 to 635 MiB (its pongs bypassed the queue limit).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

from wgmesh.relay import protocol as p
from wgmesh.relay.identity import pinned_client_context
from wgmesh.relay.server import DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE as PER_SOURCE
from wgmesh.relay.tickets import generate_signing_key, issue_ticket, public_key_of

RELAY_BIN = str(Path(sys.executable).with_name("wgmesh-relay"))
PING_INTERVAL = 0.05


def status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class Relay:
    port: int
    tls: bool

    def connect(self, source: str = "127.0.0.1", timeout: float = 5) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            return pinned_client_context().wrap_socket(sock)
        return sock


def hello(sock: socket.socket, node: int, ticket: str) -> p.FrameDecoder:
    sock.sendall(p.encode(p.Hello(node_id=node, ticket=ticket)))
    decoder = p.FrameDecoder()
    frames: list[p.Frame] = []
    while not frames:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("relay closed during hello")
        frames = decoder.feed(chunk)
    if not isinstance(frames[0], p.HelloOk):
        raise ConnectionError(f"hello refused: {frames[0]}")
    return decoder


@dataclass
class PingResult:
    sent: int = 0
    echoed: int = 0
    longest_gap: float = 0.0
    errors: list[str] = field(default_factory=list)


def relayed_ping(relay: Relay, tickets: dict[int, str], stop: threading.Event, result: PingResult) -> None:
    """Node 1 pings node 2 through the relay every PING_INTERVAL; node 2 echoes. Records the longest time
    between two echoes node 1 received."""
    try:
        a, b = relay.connect(), relay.connect()
        da, db = hello(a, 1, tickets[1]), hello(b, 2, tickets[2])
    except (OSError, ConnectionError) as error:
        result.errors.append(f"ping could not connect: {error}")
        return
    try:

        def echo() -> None:
            b.settimeout(0.5)
            while not stop.is_set():
                try:
                    chunk = b.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                for frame in db.feed(chunk):
                    if isinstance(frame, p.Data):
                        b.sendall(p.encode(p.Data(1, frame.datagram)))

        def send() -> None:
            while not stop.is_set():
                a.sendall(p.encode(p.Data(2, result.sent.to_bytes(8, "big"))))
                result.sent += 1
                time.sleep(PING_INTERVAL)

        threading.Thread(target=echo, daemon=True).start()
        threading.Thread(target=send, daemon=True).start()
        a.settimeout(0.5)
        last = time.monotonic()
        while not stop.is_set():
            try:
                chunk = a.recv(65536)
            except TimeoutError:
                result.longest_gap = max(result.longest_gap, time.monotonic() - last)
                continue
            if not chunk:
                result.errors.append("relay closed the ping's connection")
                return
            for frame in da.feed(chunk):
                if isinstance(frame, p.Data):
                    now = time.monotonic()
                    result.longest_gap = max(result.longest_gap, now - last)
                    last = now
                    result.echoed += 1
    except OSError as error:
        result.errors.append(f"ping: {error}")
    finally:
        a.close()
        b.close()


def flood(
    relay: Relay, ticket: str, stop: Event, sent: Synchronized[int], dropped: Synchronized[int]
) -> None:
    """A ticket holder that sends pings and never reads; reconnects whenever the relay drops it."""
    burst = p.encode(p.Ping(7)) * 8192
    while not stop.is_set():
        try:
            sock = relay.connect()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            hello(sock, 3, ticket)
        except (OSError, ConnectionError):
            time.sleep(0.1)
            continue
        try:
            while not stop.is_set():
                sock.sendall(burst)
                sent.value += len(burst)
        except OSError:
            dropped.value += 1
        finally:
            sock.close()


def idle(
    relay: Relay, total: int, stop: Event, opened: Synchronized[int], now_open: Synchronized[int]
) -> None:
    """Keep `total` connections open that never send, reopening each one the relay closes."""
    sel = selectors.DefaultSelector()
    sources = [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range((total + PER_SOURCE - 1) // PER_SOURCE)]

    def open_one(index: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((sources[index // PER_SOURCE], 0))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", relay.port))
        sel.register(sock, selectors.EVENT_READ, index)
        opened.value += 1

    for i in range(total):
        open_one(i)
    while not stop.is_set():
        for key, _ in sel.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()
                open_one(key.data)
        now_open.value = len(sel.get_map())
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections held open")
    parser.add_argument("--plain-tcp", action="store_true", help="plain TCP instead of TLS")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.idle + 512)), hard))
    key = generate_signing_key()
    tickets = {n: issue_ticket(key, n, 3600, time.time(), relays=["bench"]) for n in (1, 2, 3)}
    relay = Relay(0, tls=not args.plain_tcp)
    with tempfile.TemporaryDirectory() as tmp, (Path(tmp) / "relay.log").open("wb") as log:
        argv = [RELAY_BIN, "--listen", "127.0.0.1:0", "--coordinator-key", public_key_of(key)]
        argv += ["--relay-id", "bench", "--stats-interval", "3600"]
        argv += ["--plain-tcp"] if args.plain_tcp else ["--state-dir", tmp]
        proc = subprocess.Popen(argv, stderr=log)
        try:
            deadline = time.monotonic() + 10
            while not (
                listening := re.search(
                    r"event=listening .*\bport=(\d+)", (Path(tmp) / "relay.log").read_text()
                )
            ):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"relay did not start:\n{(Path(tmp) / 'relay.log').read_text()}")
                time.sleep(0.05)
            relay.port = int(listening.group(1))  # it took a free port itself
            start_rss = status_kib(proc.pid, "VmRSS")
            # The ping runs first, as a relay's real traffic would; the abuse then starts around it, each
            # in a process of its own so the ping's timing measures the relay, not this program's GIL.
            stopping = threading.Event()
            ping = PingResult()
            pinger = threading.Thread(target=relayed_ping, args=(relay, tickets, stopping, ping), daemon=True)
            pinger.start()
            while ping.echoed < 5 and not ping.errors and time.monotonic() < deadline + 10:
                time.sleep(0.05)
            ctx = mp.get_context("fork")
            stop = ctx.Event()
            sent, dropped, opened, now_open = (ctx.Value("q", 0) for _ in range(4))
            abusers = [
                ctx.Process(target=idle, args=(relay, args.idle, stop, opened, now_open)),
                ctx.Process(target=flood, args=(relay, tickets[3], stop, sent, dropped)),
            ]
            for abuser in abusers:
                abuser.start()
            time.sleep(args.seconds)
            peak = status_kib(proc.pid, "VmHWM")
            open_at_end = now_open.value
            stop.set()
            stopping.set()
            for abuser in abusers:
                abuser.join(10)
                if abuser.is_alive():
                    abuser.kill()
            pinger.join(5)
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
            stopped = [
                line for line in (Path(tmp) / "relay.log").read_text().splitlines() if "event=stopped" in line
            ]
    lost = ping.sent - ping.echoed
    print(
        f"relay {'plain TCP' if args.plain_tcp else 'TLS'}; {args.seconds:g} s; {args.idle} idle connections"
    )
    print(
        f"relayed ping: {ping.sent} sent, {ping.echoed} echoed, {lost} lost, longest gap {ping.longest_gap:.3f} s"
    )
    print(f"relay RSS: {start_rss / 1024:.0f} MiB at start, peak {peak / 1024:.0f} MiB")
    print(f"flood: {sent.value / 2**20:.0f} MiB of pings sent unread, flooder dropped {dropped.value} times")
    print(f"idle: {opened.value} opened in all, {open_at_end} open at the end")
    if stopped:
        counters = [f for f in stopped[-1].split() if f.startswith(("dropped_", "closed_"))]
        print("relay:", " ".join(counters))
    for error in ping.errors:
        print(f"error: {error}")
    ok = ping.echoed > 0 and ping.longest_gap <= 1.0 and peak < 200 * 1024 and not ping.errors
    print("targets met (gap <= 1 s, RSS < 200 MB)" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
