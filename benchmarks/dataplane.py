"""Data-plane throughput in the lab: VPC host → VPC host over the mesh vs gateway → gateway on the underlay.

Run as root: `.venv/bin/python benchmarks/dataplane.py [--seconds 5] [--backend userspace]`.
Builds its own two-site lab (name `bdp`), measures both paths with iperf3 in the same run, prints a
table with the ratio, and always tears the lab down.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from wgmesh.lab import Lab, down, up

LAB_NAME = "bdp"


def iperf(lab: Lab, client: str, server: str, address: str, seconds: int, port: int) -> tuple[float, float]:
    """(Mbit/s received, retransmits) of one iperf3 TCP run from `client` to `server`."""
    srv = lab.popen(
        server, "iperf3", "-s", "-p", str(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            done = lab.exec(
                client,
                "iperf3",
                "-J",
                "-c",
                address,
                "-p",
                str(port),
                "-t",
                str(seconds),
                timeout=seconds + 30,
            )
            end = json.loads(done.stdout or "{}").get("end", {}) if done.returncode == 0 else {}
            if "sum_received" in end:
                return end["sum_received"]["bits_per_second"] / 1e6, float(
                    end["sum_sent"].get("retransmits", 0)
                )
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"iperf3 {client} -> {address} failed: {done.stdout[-300:]}{done.stderr[-300:]}"
                )
            time.sleep(0.2)  # the server may not be listening yet
    finally:
        srv.kill()
        srv.wait()


def ping_rtt(lab: Lab, client: str, address: str) -> float:
    """Average RTT in ms over 20 pings."""
    out = lab.exec(client, "ping", "-n", "-q", "-c", "20", "-i", "0.05", address, check=True).stdout
    return float(out.rsplit("=", 1)[1].split("/")[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--backend", default="userspace", choices=["userspace", "auto"])
    args = parser.parse_args()
    down(LAB_NAME)
    lab = up(LAB_NAME, 2, args.backend, timeout=90)
    try:
        s2 = lab.plan.site(2)
        underlay_mbit, underlay_rtx = iperf(lab, "gw1", "gw2", str(s2.underlay_ip), args.seconds, 5301)
        mesh_mbit, mesh_rtx = iperf(lab, "vm1", "vm2", str(s2.vm_ip), args.seconds, 5302)
        underlay_rtt = ping_rtt(lab, "gw1", str(s2.underlay_ip))
        mesh_rtt = ping_rtt(lab, "vm1", str(s2.vm_ip))
    finally:
        down(LAB_NAME)
    rows = [
        ("gw1 → gw2, raw underlay", underlay_mbit, underlay_rtx, underlay_rtt),
        ("vm1 → vm2, over the mesh", mesh_mbit, mesh_rtx, mesh_rtt),
    ]
    print(f"{'path':<28}{'Mbit/s':>10}{'retrans':>10}{'RTT ms':>10}")
    for name, mbit, rtx, rtt in rows:
        print(f"{name:<28}{mbit:>10.1f}{rtx:>10.0f}{rtt:>10.3f}")
    print(f"mesh / underlay throughput ratio: {mesh_mbit / underlay_mbit:.3f}")
    print(f"added latency: {mesh_rtt - underlay_rtt:+.3f} ms")


if __name__ == "__main__":
    sys.exit(main())
