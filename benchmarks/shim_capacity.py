"""What a shim pair carries with no WireGuard in the way: datagrams through shim → relay → shim, and
through shim → TCP → shim straight (issue 21).

Run: `.venv/bin/python benchmarks/shim_capacity.py [--seconds 3] [--transports tls tcp direct] [--loss 0.1]`.

Everything on 127.0.0.1, in processes of its own (so each one's CPU is its own):

- a real `wgmesh-relay` (TLS with its own pinned key, or `--plain-tcp`); none for `direct`;
- two real agent shims (`wgmesh.agent.shim.RelayShim` on the agent's `NetLoop`), nodes 1 and 2, each with
  a ticket signed by a key made for the run, as an agent holds them; for `direct`, node 2's shim listens
  (`wgmesh.agent.direct_tcp`, TLS with its own key) and node 1's dials it with the pin and the pair's
  secret from WireGuard keys made for the run, as agents do on the `tcp-direct` path;
- a generator playing node 1's WireGuard: 1,400-byte datagrams (first byte 4, a WireGuard data message)
  sent from node 1's WireGuard port to the shim socket node 1's shim opened for peer 2, paced in 1 ms slices;
- a sink playing node 2's WireGuard: counts what node 2's shim delivers to its WireGuard port.

For each transport it first offers a fixed rate (`--at`, 500 Mbit/s: about what one wireguard-go sends here),
then raises the offered rate by a quarter a step from `--start` Mbit/s until more than `--loss` percent is
lost or the delivered rate stops growing. Each step prints offered and delivered Mbit/s, datagrams/s, loss,
and the CPU seconds per Gbit delivered of each process on the path (utime + stime from /proc/PID/stat).
The summary gives, per transport, the fixed-rate step (the CPU figure to compare between versions: the
same load each time) and the fastest step under the loss bound.

The generator sends each 1 ms slice's datagrams back to back, so a shim wakes up to a burst (at 500 Mbit/s
about 45 datagrams), as it does under a TCP flow through WireGuard. This machine's two cores are shared by
all five processes: the top rate is what it is here.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

from relay_capacity import cpu_seconds, end_process, free_port

from wgmesh.keys import generate_keypair
from wgmesh.lab import NotYet, wait_until
from wgmesh.relay.identity import RelayIdentity, generate_key
from wgmesh.relay.tickets import generate_signing_key, issue_ticket, public_key_of

DATAGRAM = 1400
RELAY_BIN = str(Path(sys.executable).with_name("wgmesh-relay"))
SLICE = 0.001
"""The generator's pacing slice: it sends a slice's share of datagrams, then sleeps to the next slice."""
SETTLE = 0.5
"""Seconds between the end of a window (the generator holds) and reading what arrived: the datagrams
still on their way (at most the sockets' and the connections' buffers) arrive well within it."""
START_TIMEOUT = 60.0
"""Seconds for the relay and the shims to come up (a condition waited on; generous for slow machines)."""


@dataclass(frozen=True)
class Step:
    offered_mbit: float
    sent_mbit: float
    """What the generator managed to send of the offered rate."""
    delivered_mbit: float
    datagrams_per_s: float
    loss_pct: float
    cpu: dict[str, float]
    """CPU seconds per Gbit delivered, by process."""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the processes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Direct:
    """What one node's shim needs for a direct link: its WireGuard private key and the peer's public key
    (the pair's secret), and either the listener's key to serve or the peer's listener to dial."""

    private_key: str
    peer_public_key: str
    listen_key: bytes | None
    dial_port: int
    dial_pin: str


def shim_process(
    node: int,
    peer: int,
    wg_port: int,
    relay_url: str,
    pin: str | None,
    key: str,
    out: Connection,
    direct: Direct | None = None,
) -> None:
    """Node `node`'s shim: connect to the relay (or listen or dial straight), open the socket for `peer`,
    report its port, run."""
    from wgmesh.agent import direct_auth  # noqa: PLC0415 - in the child only
    from wgmesh.agent.direct_tcp import DirectTcp, Target  # noqa: PLC0415
    from wgmesh.agent.netloop import NetLoop  # noqa: PLC0415
    from wgmesh.agent.shim import RelayShim  # noqa: PLC0415
    from wgmesh.models import RelayGrant, RelayInfo  # noqa: PLC0415
    from wgmesh.pins import Pin  # noqa: PLC0415
    from wgmesh.relay.identity import RelayIdentity  # noqa: PLC0415

    logging.disable(logging.WARNING)  # "relay unavailable" until the relay listens: expected here
    loop = NetLoop()
    loop.start()
    shim = RelayShim(loop.loop, node, wg_port, on_probe=lambda _sender, _data: None)
    if direct is not None:
        links = DirectTcp(shim)
        shim.retain_threadsafe({peer})
        links.follow_threadsafe({peer: direct_auth.pair_secret(direct.private_key, direct.peer_public_key)})
        port = shim.endpoint_for(peer).port
        if direct.listen_key is not None:
            if not links.listen(direct.dial_port, RelayIdentity.from_key(direct.listen_key)):
                raise SystemExit(f"node {node} could not listen on {direct.dial_port}")
        else:
            target = Target(peer, ("127.0.0.1",), direct.dial_port, Pin.parse(direct.dial_pin))
            links.want_threadsafe({peer: target})
            wait_until(
                lambda: loop.call(lambda: shim.carrier(peer) is not None),
                START_TIMEOUT,
                f"node {node}'s direct link",
                interval=0.05,
            )
        out.send(port)
        signal.sigwait({signal.SIGTERM})
        return
    grant = RelayGrant(
        relays=[RelayInfo(id="bench", url=relay_url, pin=pin)],
        ticket=issue_ticket(key, node, 3600, time.time()),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        coordinator_key=public_key_of(key),
    )
    shim.configure_threadsafe(grant)
    shim.retain_threadsafe({peer})
    port = shim.endpoint_for(peer).port

    def linked() -> bool:
        return loop.call(lambda: shim.active() is not None)

    wait_until(linked, START_TIMEOUT, f"node {node}'s shim to reach the relay", interval=0.05)
    out.send(port)
    signal.sigwait({signal.SIGTERM})


def generator(
    wg_port: int, shim_port: int, rate: Synchronized[float], sent: Synchronized[int], stop: Event
) -> None:
    """Node 1's WireGuard: datagrams to its shim's socket for peer 2 at `rate` datagrams/s (0: unpaced)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind(("127.0.0.1", wg_port))
    payload = bytes([4]) + os.urandom(DATAGRAM - 1)
    target = ("127.0.0.1", shim_port)
    count = 0  # since the rate last changed: what pacing counts
    total = 0
    slice_start = time.monotonic()
    slice_rate = rate.value
    while not stop.is_set():
        per_s = rate.value
        if per_s != slice_rate:
            slice_rate, slice_start, count = per_s, time.monotonic(), 0
        if per_s < 0:  # held between steps
            time.sleep(SLICE)
            continue
        if per_s > 0:
            due = int((time.monotonic() - slice_start) * per_s) - count
            if due <= 0:
                time.sleep(SLICE)
                continue
        else:
            due = 64
        for _ in range(min(due, 256)):  # the rate and the count stay current
            try:
                sock.sendto(payload, target)
            except (BlockingIOError, InterruptedError):
                continue
            count += 1
            total += 1
        sent.value = total


def sink(wg_port: int, received: Synchronized[int], stop: Event) -> None:
    """Node 2's WireGuard: count the datagrams its shim delivers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", wg_port))
    sock.settimeout(0.2)
    buf = bytearray(65536)
    count = 0
    while not stop.is_set():
        try:
            sock.recv_into(buf)
        except TimeoutError:
            continue
        count += 1
        received.value = count


# --- one transport --------------------------------------------------------------------------------


def relay_command(port: int, key: str, transport: str, state: Path) -> list[str]:
    cmd = [RELAY_BIN, "--listen", f"127.0.0.1:{port}", "--coordinator-key", public_key_of(key)]
    cmd += ["--relay-id", "bench", "--stats-interval", "3600"]
    return cmd + (["--plain-tcp"] if transport == "tcp" else ["--state-dir", str(state)])


def measure(
    transport: str, seconds: float, at_mbit: float, start_mbit: float, loss_bound: float
) -> list[Step]:
    """The fixed-rate step first, then the ramp."""
    key = generate_signing_key()
    port = free_port()
    ctx = mp.get_context("spawn")
    directs: dict[int, Direct | None] = {1: None, 2: None}
    if transport == "direct":
        one, two = generate_keypair(), generate_keypair()
        listen_key = generate_key()
        listen_pin = str(RelayIdentity.from_key(listen_key).pin)
        directs = {
            2: Direct(two.private_key, one.public_key, listen_key, port, listen_pin),
            1: Direct(one.private_key, two.public_key, None, port, listen_pin),
        }
    with (
        tempfile.TemporaryDirectory(prefix="wgmesh-shim-capacity-") as tmp,
        open(Path(tmp) / "relay.log", "w") as log,
    ):
        state = Path(tmp)
        pin = None
        if transport == "tls":
            done = subprocess.run(
                [RELAY_BIN, "pin", "--state-dir", str(state)], capture_output=True, text=True, check=True
            )
            pin = done.stdout.strip()
        relay = (
            subprocess.Popen(relay_command(port, key, transport, state), stdout=log, stderr=subprocess.STDOUT)
            if transport != "direct"
            else None
        )
        procs: list[mp.process.BaseProcess] = []
        stop = ctx.Event()
        try:
            url = f"{transport}://127.0.0.1:{port}"
            wg1, wg2 = free_udp_port(), free_udp_port()
            ports: dict[int, int] = {}
            shims: dict[int, mp.process.BaseProcess] = {}
            # The listener first: the dialer reports once its link is up.
            order = ((2, 1, wg2), (1, 2, wg1)) if transport == "direct" else ((1, 2, wg1), (2, 1, wg2))
            for node, peer, wg_port in order:
                here, there = ctx.Pipe(duplex=False)
                proc = ctx.Process(
                    target=shim_process, args=(node, peer, wg_port, url, pin, key, there, directs[node])
                )
                proc.start()
                procs.append(proc)
                shims[node] = proc

                def reported(pipe: Connection = here, p: mp.process.BaseProcess = proc) -> bool:
                    if not p.is_alive():
                        raise SystemExit(f"a shim process exited ({p.exitcode})")
                    if not pipe.poll(0.05):
                        raise NotYet("the shim has not reached the relay")
                    return True

                wait_until(reported, START_TIMEOUT, "a shim to reach the relay", interval=0.05)
                ports[node] = here.recv()
            rate: Synchronized[float] = ctx.Value("d", 0.0, lock=False)  # type: ignore[assignment]
            sent: Synchronized[int] = ctx.Value("q", 0, lock=False)  # type: ignore[assignment]
            received: Synchronized[int] = ctx.Value("q", 0, lock=False)  # type: ignore[assignment]
            rate.value = -1.0  # hold until the first step
            gen = ctx.Process(target=generator, args=(wg1, ports[1], rate, sent, stop))
            snk = ctx.Process(target=sink, args=(wg2, received, stop))
            for p in (snk, gen):
                p.start()
                procs.append(p)
            pids = {
                "shim 1": shims[1].pid,
                "relay": relay.pid if relay is not None else None,
                "shim 2": shims[2].pid,
                "generator": gen.pid,
                "sink": snk.pid,
            }

            def step(per_s: float) -> Step:
                rate.value = per_s
                time.sleep(0.3)  # warm-up; then the window
                r0, s0 = received.value, sent.value
                cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
                t0 = time.monotonic()
                time.sleep(seconds)
                rate.value = -1.0  # hold: what was sent in the window is what must arrive
                t1 = time.monotonic()
                cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
                time.sleep(SETTLE)
                s1, r1 = sent.value, received.value
                delivered = r1 - r0
                gbit = delivered * DATAGRAM * 8 / 1e9
                return Step(
                    offered_mbit=per_s * DATAGRAM * 8 / 1e6,
                    sent_mbit=(s1 - s0) * DATAGRAM * 8 / 1e6 / (t1 - t0),
                    delivered_mbit=delivered * DATAGRAM * 8 / 1e6 / (t1 - t0),
                    datagrams_per_s=delivered / (t1 - t0),
                    loss_pct=100.0 * max(0, (s1 - s0) - delivered) / max(1, s1 - s0),
                    cpu={name: (cpu1[name] - cpu0[name]) / gbit if gbit else float("inf") for name in cpu1},
                )

            fixed = step(at_mbit * 1e6 / 8 / DATAGRAM)
            print_step(transport, fixed, flush=True)
            steps: list[Step] = [fixed]
            per_s = start_mbit * 1e6 / 8 / DATAGRAM
            while True:
                result = step(per_s)
                steps.append(result)
                print_step(transport, result, flush=True)
                best = max((s.delivered_mbit for s in steps[1:-1]), default=0.0)
                if result.loss_pct > loss_bound or result.delivered_mbit < best * 1.02:
                    break
                per_s *= 1.25
            return steps
        finally:
            stop.set()
            for p in procs:
                if p.is_alive() and p.pid is not None:
                    os.kill(p.pid, signal.SIGTERM)
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join()
            if relay is not None:
                end_process(relay)


ORDER = ("shim 1", "relay", "shim 2", "generator", "sink")


def print_step(transport: str, s: Step, *, flush: bool = False) -> None:
    offered = f"{s.offered_mbit:7.0f}"
    cpu = "  ".join(f"{name} {s.cpu[name]:5.2f}" for name in ORDER if name in s.cpu)
    print(
        f"{transport:6} offered {offered} sent {s.sent_mbit:7.1f} Mbit/s  delivered {s.delivered_mbit:7.1f} Mbit/s "
        f"{s.datagrams_per_s:8.0f} dgram/s  loss {s.loss_pct:6.3f} %  CPU-s/Gbit: {cpu}",
        flush=flush,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measurement window per step")
    parser.add_argument(
        "--transports", nargs="+", choices=["tls", "tcp", "direct"], default=["tls", "tcp", "direct"]
    )
    parser.add_argument("--at", type=float, default=500.0, help="the fixed rate, Mbit/s")
    parser.add_argument("--start", type=float, default=200.0, help="first rate of the ramp, Mbit/s")
    parser.add_argument("--loss", type=float, default=0.1, help="loss bound in percent")
    args = parser.parse_args()
    summary: list[tuple[str, Step, Step | None]] = []
    for transport in args.transports:
        steps = measure(transport, args.seconds, args.at, args.start, args.loss)
        under = [s for s in steps[1:] if s.loss_pct <= args.loss]
        summary.append((transport, steps[0], max(under, key=lambda s: s.delivered_mbit) if under else None))
    print()
    print(
        f"at {args.at:g} Mbit/s, then the fastest step under {args.loss:g} % loss (CPU-s per Gbit delivered):"
    )
    for transport, fixed, best in summary:
        print_step(transport, fixed)
        if best is None:
            print(f"{transport:6} no step of the ramp under the loss bound")
        else:
            print_step(transport, best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
