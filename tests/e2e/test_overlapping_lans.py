"""Issue 20 e2e: VPCs whose CIDRs overlap, reached through 1:1 prefix translation at their gateways.

Sites 1 and 2 both hold 10.1.0.0/24 (vm1 and vm2 are both 10.1.0.10); site 3 holds 10.3.0.0/24. Each VPC
host runs a small echo server that answers with its name and the address it saw the request come from,
so every check says which host answered and what the translation made of the source.

Without aliases, site 2's prefix is a conflict whose reason says how to resolve it, and vm3 reaches vm1
only. With site 2 aliased, vm3 reaches both VPCs (site 1 at its own prefix, site 2 at its alias), and
vm2's traffic leaves under the alias. With both aliased, vm1 and vm2 reach each other at their aliases by
ICMP, TCP and UDP, directly and with UDP blocked (through the relay).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from lab_paths import path_of, ping_ok, tcp_transfer

from wgmesh.lab import Lab, wait_until

pytestmark = [pytest.mark.e2e]

PORT = 7700
LAN = "10.1.0.0/24"
ALIAS1, ALIAS2 = "10.200.0.0/24", "10.201.0.0/24"

# Answers each TCP line and each UDP datagram with "NAME SOURCE-ADDRESS".
ECHO_SERVER = """
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", port))
def answer_udp():
    while True:
        data, peer = udp.recvfrom(2048)
        udp.sendto(f"{name} {peer[0]}".encode(), peer)
threading.Thread(target=answer_udp, daemon=True).start()
tcp = socket.create_server(("0.0.0.0", port))
print("ready", flush=True)
while True:
    conn, peer = tcp.accept()
    with conn:
        conn.recv(64)
        conn.sendall(f"{name} {peer[0]}".encode())
"""

ASK = """
import socket, sys
host, port, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if kind == "tcp":
    with socket.create_connection((host, port), timeout=3) as s:
        s.sendall(b"who\\n")
        print(s.recv(128).decode())
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(b"who", (host, port))
    print(s.recvfrom(128)[0].decode())
"""


def ask(lab: Lab, src: str, address: str, kind: str = "tcp") -> str | None:
    """What the echo server at `address` answers `src` over TCP or UDP: "NAME SOURCE", or None."""
    done = lab.exec(src, sys.executable, "-c", ASK, address, str(PORT), kind)
    return done.stdout.strip() if done.returncode == 0 else None


def answers(lab: Lab, src: str, address: str, expected: str, kind: str = "tcp") -> None:
    """Wait until `src` asking `address` gets `expected` ("NAME SOURCE"); a timeout says what it heard."""

    def heard() -> bool:
        got = ask(lab, src, address, kind)
        assert got == expected, f"heard {got!r}"
        return True

    wait_until(heard, 30, f"{src} asking {address} over {kind} to hear {expected!r}")


def route(lab: Lab, gateway: str) -> dict[str, object]:
    found = lab.api("GET", "/api/v1/routes")
    assert isinstance(found, dict)
    return next(r for r in found["routes"] if r["gateway"] == gateway and r["prefix"] == LAN)


def alias(lab: Lab, gateway: str, to: str | None) -> dict[str, object]:
    answer = lab.api("POST", f"/api/v1/nodes/{gateway}/routes/alias", {"prefix": LAN, "alias": to})
    assert isinstance(answer, dict)
    return answer


@pytest.fixture(scope="class")
def echo(shared_lab: Lab) -> Iterator[Lab]:
    """An echo server on every VPC host for the class's tests; stopped (by PID) afterwards."""
    servers: list[subprocess.Popen[str]] = []
    try:
        for site in shared_lab.plan.sites:
            server = shared_lab.popen(
                site.host, sys.executable, "-c", ECHO_SERVER, site.host, str(PORT), stdout=subprocess.PIPE
            )
            servers.append(server)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield shared_lab
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=10)


@pytest.mark.lab(sites=3, lans={2: LAN})
class TestOverlappingLans:
    def test_without_an_alias_the_later_vpc_is_a_conflict_and_the_earlier_one_is_reached(
        self, echo: Lab
    ) -> None:
        lab = echo
        assert str(lab.plan.site(2).vm_ip) == str(lab.plan.site(1).vm_ip) == "10.1.0.10"
        later = route(lab, "gw2")
        assert later["state"] == "conflict"
        assert f"wgmesh routes alias {LAN} --node gw2 --as PREFIX" in str(later["reason"])
        answers(lab, "vm3", "10.1.0.10", "vm1 10.3.0.10")

    def test_with_site_2_aliased_site_3_reaches_both_vpcs(self, echo: Lab) -> None:
        lab = echo
        assert alias(lab, "gw2", ALIAS2)["state"] == "active"
        answers(lab, "vm3", "10.201.0.10", "vm2 10.3.0.10")
        answers(lab, "vm3", "10.1.0.10", "vm1 10.3.0.10")  # site 1 still at its own prefix
        answers(lab, "vm3", "10.201.0.10", "vm2 10.3.0.10", "udp")
        assert ping_ok(lab, "vm3", "10.201.0.10")
        # vm2's own traffic leaves under its alias: vm3 sees it come from 10.201.0.10.
        answers(lab, "vm2", "10.3.0.10", "vm3 10.201.0.10")

    def test_with_both_aliased_the_twin_hosts_reach_each_other(self, echo: Lab) -> None:
        lab = echo
        assert alias(lab, "gw1", ALIAS1)["state"] == "active"
        for kind in ("tcp", "udp"):
            answers(lab, "vm1", "10.201.0.10", "vm2 10.200.0.10", kind)
            answers(lab, "vm2", "10.200.0.10", "vm1 10.201.0.10", kind)
        assert ping_ok(lab, "vm1", "10.201.0.10") and ping_ok(lab, "vm2", "10.200.0.10")
        took = tcp_transfer(lab, lab.plan.site(1), lab.plan.site(2), address="10.201.0.10")
        print(f"4 MiB vm1 -> vm2 at its alias in {took:.2f} s")

    def test_with_udp_blocked_the_aliases_work_through_the_relay(self, echo: Lab) -> None:
        lab = echo
        lab.block_tcp(1, 2)  # TCP between the gateways too, so the relay it is (not tcp-direct)
        lab.block_udp(1)
        try:
            wait_until(
                lambda: path_of(lab, "gw1", "gw2") == "relay" and path_of(lab, "gw2", "gw1") == "relay",
                60,
                "gw1 and gw2 on the relay",
            )
            for kind in ("tcp", "udp"):
                answers(lab, "vm1", "10.201.0.10", "vm2 10.200.0.10", kind)
                answers(lab, "vm2", "10.200.0.10", "vm1 10.201.0.10", kind)
            assert ping_ok(lab, "vm2", "10.200.0.10")
            tcp_transfer(lab, lab.plan.site(2), lab.plan.site(1), address="10.200.0.10", port=5202)
        finally:
            lab.unblock_udp(1)
            lab.unblock_tcp(1, 2)
