"""Admin-call latency under an enrollment flood, with the coordinator's rate limits (docs/security.md).

Run: `.venv/bin/python benchmarks/enroll_flood.py [--seconds 30] [--rate 100] [--rate-limit enroll=off ...]`.
Starts a real coordinator on 127.0.0.1 (SQLite in a temporary directory, its default rate limits unless
`--rate-limit` says otherwise), then measures an admin write (`POST /api/v1/tokens`, one every 0.1 s from
127.0.0.1) for 10 s idle, and again for `--seconds` while 127.0.0.2 sends `--rate` bogus enrollments per
second from a process of its own (all of a second's requests at once, each on its own connection or
request, none waiting for another). Prints p50/p95/max of the admin
call idle and under load (goal: within 2x), and how the flood was answered (429, 401, other). Loopback
source addresses only: the flood never leaves this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from wgmesh import keys

ADMIN_TOKEN = "wga_benchmark-admin-token-0123456789"
ADMIN_ADDRESS = "127.0.0.1"
FLOOD_ADDRESS = "127.0.0.2"
IDLE_SECONDS = 10.0
ADMIN_INTERVAL = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(db: Path, port: int, limits: list[str]) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-c",
        "from wgmesh.coordinator.main import main; main()",
        "--db",
        f"sqlite:///{db}",
        "--listen",
        f"0.0.0.0:{port}",  # 127.0.0.2 is loopback too: the flood's source and destination
        "--metrics-listen",
        "off",
        *[arg for spec in limits for arg in ("--rate-limit", spec)],
    ]
    env = {**os.environ, "WGMESH_ADMIN_TOKEN": ADMIN_TOKEN}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the coordinator did not start")


async def admin_calls(url: str, seconds: float) -> list[float]:
    """Latencies (ms) of admin writes, one every ADMIN_INTERVAL for `seconds`."""
    transport = httpx.AsyncHTTPTransport(local_address=ADMIN_ADDRESS)
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    took: list[float] = []
    async with httpx.AsyncClient(base_url=url, transport=transport, headers=headers, timeout=60) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            r = await client.post("/api/v1/tokens", json={"description": "benchmark"})
            took.append((time.perf_counter() - started) * 1000)
            if r.status_code != 201:
                raise SystemExit(f"admin call failed: {r.status_code} {r.text}")
            await asyncio.sleep(ADMIN_INTERVAL)
    return took


async def enroll_once(url: httpx.URL, body: bytes, answers: Counter[str]) -> None:
    """One bogus enrollment on a connection of its own from FLOOD_ADDRESS; counts the answer's status.

    Plain asyncio streams, not an HTTP client's pool: thousands of short requests with nothing to reuse.
    """
    head = (
        f"POST /api/v1/enroll HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        async with asyncio.timeout(10):  # an answer later than that is counted, not waited out
            reader, writer = await asyncio.open_connection(url.host, url.port, local_addr=(FLOOD_ADDRESS, 0))
            try:
                writer.write(head + body)
                status = (await reader.readline()).split()
                answers[status[1].decode() if len(status) > 1 else "no answer"] += 1
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        answers[type(exc).__name__] += 1


async def flood(url: str, rate: int, seconds: float, answers: Counter[str]) -> None:
    """`rate` bogus enrollments a second from FLOOD_ADDRESS, sent together at the start of each second."""
    target = httpx.URL(url)
    public_key = keys.generate_keypair().public_key
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    for second in range(int(seconds)):
        # All of a second's requests at once: the "100 concurrent bogus enrollments".
        await asyncio.sleep(max(0.0, started + second - time.monotonic()))
        for i in range(rate):
            n = second * rate + i
            body = json.dumps(
                {"token": f"wgt_{n}.bogus", "name": f"flood-{n % 1000}", "public_key": public_key}
            )
            tasks.append(asyncio.create_task(enroll_once(target, body.encode(), answers)))
    await asyncio.gather(*tasks)


def flood_process(url: str, rate: int, seconds: float, out: multiprocessing.Queue[dict[str, int]]) -> None:
    # Its own process: the flood's client work must not delay the admin calls being measured.
    answers: Counter[str] = Counter()
    started = time.monotonic()
    asyncio.run(flood(url, rate, seconds, answers))
    answers["elapsed_ms"] = round((time.monotonic() - started) * 1000)
    out.put(dict(answers))


def measure(url: str, rate: int, seconds: float) -> tuple[list[float], list[float], Counter[str]]:
    idle = asyncio.run(admin_calls(url, IDLE_SECONDS))
    # spawn, not fork: a forked child inherits this process's used event loop machinery and stalls.
    spawn = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[dict[str, int]] = spawn.Queue()
    flooding = spawn.Process(target=flood_process, args=(url, rate, seconds, out))
    flooding.start()
    time.sleep(1.0)  # the flood is under way before the first admin call
    loaded = asyncio.run(admin_calls(url, seconds - 1.0))
    # On a busy machine the flood's own client falls behind its schedule: wait for it, and say so (main).
    answers = Counter(out.get(timeout=seconds * 10))
    flooding.join(timeout=10)
    return idle, loaded, answers


def summary(name: str, ms: list[float]) -> str:
    p95 = statistics.quantiles(ms, n=20)[-1]
    return f"{name:>6}: n={len(ms)} p50={statistics.median(ms):.1f} ms p95={p95:.1f} ms max={max(ms):.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=100, help="bogus enrollments per second")
    parser.add_argument("--rate-limit", action="append", default=[], help="passed to the coordinator")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wgmesh-flood-") as tmp:
        port = free_port()
        proc = start(Path(tmp) / "c.db", port, args.rate_limit)
        try:
            idle, loaded, answers = measure(f"http://127.0.0.1:{port}", args.rate, args.seconds)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    print(f"flood: {args.rate}/s bogus enrollments from {FLOOD_ADDRESS} for {args.seconds:g} s")
    print(f"rate limits: {' '.join(args.rate_limit) or 'defaults'}")
    print(summary("idle", idle))
    print(summary("flood", loaded))
    ratio = statistics.median(loaded) / statistics.median(idle)
    p95 = statistics.quantiles(loaded, n=20)[-1] / statistics.quantiles(idle, n=20)[-1]
    print(f"under load / idle: p50 {ratio:.2f}x, p95 {p95:.2f}x (goal: within 2x)")
    elapsed = answers.pop("elapsed_ms") / 1000
    total = sum(answers.values())
    print(f"flood sent and answered in {elapsed:.1f} s: {total / elapsed:.0f} requests/s achieved")
    print("flood answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())) + f" (of {total})")


if __name__ == "__main__":
    main()
