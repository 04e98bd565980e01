"""TCP between VPC hosts behind cloud-like sites (issue 13): plain, security groups dropping ICMP, jumbo LANs,
a 1460-byte underlay.

Run as root: `.venv/bin/python benchmarks/mtu_clamp.py [--seconds 5]`.
Builds a two-site lab (name `bmc` and three random hex digits, so it never meets another lab on a shared
machine) once per configuration, each with the switches given at `up` (so the
agents start on the underlay they will keep), and measures iperf3 TCP from vm1 to vm2:

(a) no switches;
(b) `--sg-drop-icmp 1,2`: both VPC hosts drop ICMP "fragmentation needed", so path MTU discovery is a
    black hole and, without MSS clamping, a full-size segment never crosses the tunnel;
(c) `--lan-mtu 1=9001,2=9001 --sg-drop-icmp 1,2`: AWS-like jumbo LANs behind the same security groups;
(d) `--underlay-mtu 2=1460`: site 2's underlay as GCP's default VPC, ICMP allowed.

Prints Mbit/s, retransmits and the ratio to (a) for each. A stalled stream shows as 0 (iperf3 counts
nothing received, or gives up). The agent clamps the MSS and fits its tunnel to the underlay, so (b)-(d)
are expected near (a); a 0 there is a regression.
Always tears each lab down.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from wgmesh.errors import WgmeshError
from wgmesh.lab import Lab, NotYet, WaitTimeout, down, up, wait_until

LAB_NAME = "bmc" + secrets.token_hex(2)[:3]
PORT = 5201


@dataclass(frozen=True)
class Config:
    label: str
    lan_mtu: Mapping[int, int] = field(default_factory=dict)
    underlay_mtu: Mapping[int, int] = field(default_factory=dict)
    sg_drop_icmp: Iterable[int] = ()


CONFIGS = [
    Config("(a) no switches"),
    Config("(b) --sg-drop-icmp 1,2", sg_drop_icmp=(1, 2)),
    Config("(c) --lan-mtu 1=9001,2=9001 --sg-drop-icmp 1,2", lan_mtu={1: 9001, 2: 9001}, sg_drop_icmp=(1, 2)),
    Config("(d) --underlay-mtu 2=1460", underlay_mtu={2: 1460}),
]


@dataclass
class Result:
    mbit: float
    retransmits: float
    note: str


def iperf(lab: Lab, seconds: int) -> Result:
    """One iperf3 TCP run vm1 -> vm2; 0 Mbit/s with a note when the stream stalled or iperf3 gave up."""
    dst = lab.plan.site(2)
    srv = lab.popen(
        "vm2", "iperf3", "-s", "-p", str(PORT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    outcome: list[Result] = []

    def finished() -> bool:
        """True with a result in `outcome`; NotYet (retried) while the server is not listening."""
        try:
            # A black-holed data stream can also hang iperf3's end-of-test exchange: bounded.
            done = lab.exec(
                "vm1",
                "iperf3",
                "-J",
                "-c",
                str(dst.vm_ip),
                "-p",
                str(PORT),
                "-t",
                str(seconds),
                "--connect-timeout",
                "3000",
                timeout=seconds + 20,
            )
        except WgmeshError as exc:
            outcome.append(Result(0.0, float("nan"), f"iperf3 hung ({exc.code})"))
            return True
        report = json.loads(done.stdout or "{}")
        end = report.get("end", {})
        if "sum_received" in end:
            bits = end["sum_received"]["bits_per_second"]
            outcome.append(Result(bits / 1e6, float(end["sum_sent"].get("retransmits", 0)), ""))
            return True
        error = f"iperf3: {report.get('error', done.stderr.strip()[-120:])}"
        if "connect" in error:
            raise NotYet(error)  # the server may not be listening yet: try again
        outcome.append(Result(0.0, float("nan"), error))
        return True

    try:
        wait_until(finished, 10, "iperf3 to connect", interval=0.2)
        return outcome[-1]
    except WaitTimeout as exc:
        return Result(0.0, float("nan"), str(exc))
    finally:
        srv.kill()
        srv.wait()


def measure(config: Config, seconds: int) -> tuple[Result, int | None]:
    """The run under one configuration, in a lab of its own, and gw2's tunnel MTU."""
    try:
        # Inside the try: `up` leaves a lab that did not converge up for inspection; not here.
        lab = up(
            LAB_NAME,
            2,
            "userspace",
            timeout=90,
            lan_mtu=config.lan_mtu,
            underlay_mtu=config.underlay_mtu,
            sg_drop_icmp=config.sg_drop_icmp,
        )
        site = lab.plan.site(2)
        link = json.loads(lab.exec("gw2", "ip", "-j", "link", "show", site.wg_interface).stdout or "[{}]")
        return iperf(lab, seconds), link[0].get("mtu")
    finally:
        down(LAB_NAME)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for config in CONFIGS:
        result, mtu = measure(config, args.seconds)
        rows.append((config, result, mtu))
        print(f"{config.label}: done", file=sys.stderr)
    base = rows[0][1].mbit
    print(f"iperf3 TCP vm1 -> vm2 over the mesh, {args.seconds} s per run, one fresh two-site lab per row")
    print(f"{'configuration':<50}{'Mbit/s':>10}{'retrans':>10}{'ratio':>8}{'gw2 MTU':>9}  note")
    for config, result, mtu in rows:
        ratio = result.mbit / base if base else float("nan")
        print(
            f"{config.label:<50}{result.mbit:>10.1f}{result.retransmits:>10.0f}{ratio:>8.3f}"
            f"{mtu if mtu is not None else '-':>9}  {result.note}"
        )


if __name__ == "__main__":
    main()
