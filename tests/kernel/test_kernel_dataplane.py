"""Kernel WireGuard through the agent's DataPlane, in a real kernel (`make test-kernel` boots one).

Each test works in its own network namespaces inside the guest; addresses come from 198.18.0.0/15
(underlay and the sites' subnets) and 100.96.0.0/16 (overlay) only.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kernel_harness import record_figure
from netns_harness import Pair, Site, Worker, sh

from wgmesh import keys
from wgmesh.lab import down, up
from wgmesh.models import PeerConfig

pytestmark = pytest.mark.kernel

BASE = int(ipaddress.ip_address("198.18.64.0"))


def start(site: Site, backend: str, expect: str | None = None) -> Worker:
    """A worker in the site's namespace holding a DataPlane with this backend, brought up."""
    site.worker = Worker(site.ns, site.log)
    site.worker.call(
        "init",
        ifname=site.ifname,
        backend=backend,
        private_key=site.keypair.private_key,
        listen_port=site.port,
    )
    answer = site.worker.call("up")
    assert answer["kind"] == (expect or backend)
    return site.worker


def lone_site(tmp_path: Path, namespaces: list[str], name: str, port: int = 51820) -> Site:
    """A site in a fresh namespace with only its loopback up."""
    prefix = f"wgk{secrets.token_hex(2)}"
    site = Site(
        f"{prefix}{name}",
        f"{prefix}v",
        "198.18.1.1",
        f"{prefix}w",
        "100.96.0.1",
        port,
        "198.19.0.0/24",
        tmp_path / f"{name}.log",
    )
    sh("ip", "netns", "add", site.ns)
    namespaces.append(site.ns)
    sh("ip", "-n", site.ns, "link", "set", "lo", "up")
    return site


def many_peers(count: int) -> list[PeerConfig]:
    """`count` peers, each with an overlay /32 and two /27 subnets of 198.18.64.0/18."""
    peers = []
    for i in range(count):
        first = ipaddress.ip_network(f"{ipaddress.ip_address(BASE + i * 64)}/27")
        second = ipaddress.ip_network(f"{ipaddress.ip_address(BASE + i * 64 + 32)}/27")
        overlay = f"100.96.{1 + i // 250}.{1 + i % 250}"
        peers.append(
            PeerConfig(
                node_id=i + 1,
                name=f"peer{i + 1}",
                public_key=keys.generate_keypair().public_key,
                overlay_ip=overlay,
                allowed_ips=[f"{overlay}/32", str(first), str(second)],
                endpoints=[f"198.19.{i // 250}.{1 + i % 250}:{51820 + i}"],
                psk=keys.generate_keypair().public_key if i % 2 else None,
            )
        )
    return peers


def expected(peers: list[PeerConfig]) -> dict[str, dict[str, Any]]:
    return {
        p.public_key: {
            "allowed_ips": sorted(p.allowed_ips),
            "endpoint": p.endpoints[0] if p.endpoints else None,
        }
        for p in peers
    }


def seen(worker: Worker) -> dict[str, dict[str, Any]]:
    peers = worker.call("observe")["peers"]
    return {k: {"allowed_ips": sorted(v["allowed_ips"]), "endpoint": v["endpoint"]} for k, v in peers.items()}


def wg_dump(site: Site) -> dict[str, dict[str, str]]:
    """`wg show IF dump` per peer: preshared key, endpoint, allowed IPs (wg reads the kernel itself)."""
    peers = {}
    for line in site.exec("wg", "show", site.ifname, "dump").stdout.splitlines()[1:]:
        key, psk, endpoint, allowed, *_ = line.split("\t")
        peers[key] = {"psk": psk, "endpoint": endpoint, "allowed_ips": ",".join(sorted(allowed.split(",")))}
    return peers


def test_300_peers_written_read_back_and_second_apply_is_empty(tmp_path: Path, namespaces: list[str]) -> None:
    site = lone_site(tmp_path, namespaces, "big")
    worker = start(site, "kernel")
    peers = many_peers(300)

    first = worker.call("apply", netmap=site.netmap(*peers).model_dump(mode="json"))
    started = time.monotonic()
    observed = seen(worker)
    read = time.monotonic() - started

    assert observed == expected(peers)
    dump = wg_dump(site)
    assert len(dump) == 300
    for p in peers:
        assert dump[p.public_key]["psk"] == (p.psk or "(none)")
        assert dump[p.public_key]["allowed_ips"] == ",".join(sorted(p.allowed_ips))
    routes = site.routes()
    assert all(f"{p.allowed_ips[1]} dev {site.ifname}" in routes for p in peers)

    second = worker.call("apply", netmap=site.netmap(*peers).model_dump(mode="json"))
    assert second["operations"] == 0, second
    record_figure("300 peers x 3 allowed IPs: first apply (device + 900 routes)", f"{first['seconds']:.2f} s")
    record_figure("300 peers: read back (observe, via worker)", f"{read:.2f} s")
    record_figure("300 peers: second apply (zero operations)", f"{second['seconds']:.2f} s")


def test_endpoint_change_peer_removal_and_psk_round_trip(tmp_path: Path, namespaces: list[str]) -> None:
    site = lone_site(tmp_path, namespaces, "chg")
    worker = start(site, "kernel")
    peers = many_peers(5)
    worker.call("apply", netmap=site.netmap(*peers).model_dump(mode="json"))
    before = wg_dump(site)

    moved = peers[2].model_copy(update={"endpoints": ["198.19.9.9:40000"]})
    changed = [*peers[:2], moved, *peers[3:]]
    result = worker.call("apply", netmap=site.netmap(*changed).model_dump(mode="json"))
    assert result["device_ops"] == 1, result  # the endpoint only: allowed IPs are not resent
    after = wg_dump(site)
    assert after[moved.public_key]["endpoint"] == "198.19.9.9:40000"
    assert after[moved.public_key]["allowed_ips"] == before[moved.public_key]["allowed_ips"]
    assert {k: v for k, v in after.items() if k != moved.public_key} == {
        k: v for k, v in before.items() if k != moved.public_key
    }

    remaining = [p for p in changed if p is not peers[1]]
    worker.call("apply", netmap=site.netmap(*remaining).model_dump(mode="json"))
    gone = wg_dump(site)
    assert set(gone) == {p.public_key for p in remaining}
    assert all(gone[k] == after[k] for k in gone)
    assert f"{peers[1].allowed_ips[1]} dev" not in site.routes()

    # Preshared keys: set, read back, rotated, cleared.
    psk = keys.generate_keypair().public_key
    with_psk = [remaining[0].model_copy(update={"psk": psk}), *remaining[1:]]
    worker.call("apply", netmap=site.netmap(*with_psk).model_dump(mode="json"))
    assert wg_dump(site)[remaining[0].public_key]["psk"] == psk
    rotated = keys.generate_keypair().public_key
    with_psk[0] = with_psk[0].model_copy(update={"psk": rotated})
    worker.call("apply", netmap=site.netmap(*with_psk).model_dump(mode="json"))
    assert wg_dump(site)[remaining[0].public_key]["psk"] == rotated
    with_psk[0] = with_psk[0].model_copy(update={"psk": None})
    worker.call("apply", netmap=site.netmap(*with_psk).model_dump(mode="json"))
    assert wg_dump(site)[remaining[0].public_key]["psk"] == "(none)"
    assert worker.call("apply", netmap=site.netmap(*with_psk).model_dump(mode="json"))["operations"] == 0


def test_two_namespaces_ping_and_tcp_over_kernel_wireguard(pair: Pair) -> None:
    a, b = pair.a, pair.b
    for site in (a, b):
        start(site, "kernel")
    a.apply(b.as_peer(2))
    b.apply(a.as_peer(1))

    deadline = time.monotonic() + 15
    while a.ping(b.overlay).returncode != 0:
        assert time.monotonic() < deadline, "no ping across kernel WireGuard within 15 s"
    assert b.ping(a.overlay, count=3).returncode == 0

    # TCP: 4 MiB from a to b over the tunnel, checked byte for byte by its digest on both sides.
    server = (
        "import socket,hashlib;s=socket.create_server(('100.96.0.2',5001));c,_=s.accept();h=hashlib.sha256();n=0\n"
        "while (d:=c.recv(65536)):\n h.update(d);n+=len(d)\nprint(n,h.hexdigest())"
    )
    client = (
        "import socket,hashlib,os;d=os.urandom(4<<20);c=socket.create_connection(('100.96.0.2',5001),timeout=10)\n"
        "c.sendall(d);c.close();print(len(d),hashlib.sha256(d).hexdigest())"
    )
    srv = subprocess.Popen(
        ["ip", "netns", "exec", b.ns, sys.executable, "-c", server], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            sent = a.exec(sys.executable, "-c", client, check=False, timeout=60)
            if sent.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the server may not listen yet
        assert sent.returncode == 0, sent.stderr
        received, _ = srv.communicate(timeout=60)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait(5)
    assert received.split() == sent.stdout.split()
    stats = {p["public_key"]: p for p in a.w.call("stats")["peers"]}
    assert stats[b.keypair.public_key]["tx_bytes"] > 4 << 20


def test_userspace_and_kernel_observe_the_same_device(tmp_path: Path, namespaces: list[str]) -> None:
    kernel_site = lone_site(tmp_path, namespaces, "k")
    user_site = lone_site(tmp_path, namespaces, "u")
    user_site.keypair = kernel_site.keypair
    peers = many_peers(40)
    peers[3] = peers[3].model_copy(update={"endpoints": []})
    netmap = kernel_site.netmap(*peers).model_dump(mode="json")

    kernel, user = start(kernel_site, "kernel"), start(user_site, "userspace")
    for worker in (kernel, user):
        worker.call("apply", netmap=netmap)
    k, u = kernel.call("observe"), user.call("observe")
    for answer in (k, u):
        for peer in answer["peers"].values():
            peer["allowed_ips"] = sorted(peer["allowed_ips"])
    assert k == u
    assert k["peers"][peers[3].public_key]["endpoint"] is None
    assert wg_dump(kernel_site) == wg_dump(user_site)
    for worker in (kernel, user):
        assert worker.call("apply", netmap=netmap)["operations"] == 0


def test_auto_backend_picks_the_kernel_module(tmp_path: Path, namespaces: list[str]) -> None:
    site = lone_site(tmp_path, namespaces, "auto")
    start(site, "auto", expect="kernel")
    assert "wireguard" in sh("ip", "-n", site.ns, "-d", "link", "show", site.ifname).stdout


def test_lab_with_two_sites_on_kernel_wireguard() -> None:
    name = f"k{secrets.token_hex(2)}"
    started = time.monotonic()
    try:
        lab = up(name, 2, "auto", timeout=180)
        record_figure(
            "lab up --sites 2 --backend auto (kernel), converged", f"{time.monotonic() - started:.1f} s"
        )
        for index in (1, 2):
            site = lab.plan.site(index)
            link = sh("ip", "-n", site.gw_ns, "-d", "link", "show", site.wg_interface).stdout
            assert "wireguard" in link, f"{site.gw_ns} runs no kernel WireGuard link: {link}"
        assert not any(
            b"wireguard-go" in p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if p.exists()
        )
        ping = lab.exec("vm1", "ping", "-n", "-c", "3", "-W", "2", str(lab.plan.site(2).vm_ip), timeout=30)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    finally:
        down(name)


IPV6_AND_FWMARK = """
import sys
from wgmesh import keys
from wgmesh.agent.plan import AddPeer, SetEndpoint, SetFwmark, SetKeepalive, plan_device
from wgmesh.agent.system.wireguard_kernel import KernelBackend
from wgmesh.agent.wgstate import DeviceSpec, PeerSpec, PrivateKey

wg = KernelBackend(sys.argv[1])
me = PrivateKey(keys.generate_keypair().private_key)
wg.ensure_up(me, 51820)
peer = PeerSpec(keys.generate_keypair().public_key, ("2001:db8:1::/64", "100.96.7.7/32"), "[2001:db8::1]:51820",
                None, 25)
wg.apply([SetFwmark(0x77), AddPeer(peer)])
seen = wg.observe()
assert seen.spec.fwmark == 0x77, seen.spec.fwmark
got = seen.spec.peers[peer.public_key]
assert got.endpoint == "[2001:db8::1]:51820", got.endpoint
assert sorted(got.allowed_ips) == sorted(peer.allowed_ips), got.allowed_ips
assert got.keepalive == 25
wg.apply([SetEndpoint(peer.public_key, "198.18.3.3:4000"), SetKeepalive(peer.public_key, None)])
got = wg.observe().spec.peers[peer.public_key]
assert (got.endpoint, got.keepalive) == ("198.18.3.3:4000", None), got
assert sorted(got.allowed_ips) == sorted(peer.allowed_ips)
want = DeviceSpec.of(listen_port=51820, peers=[got], private_key=me, fwmark=0x77)
assert plan_device(want, wg.observe().spec) == []
wg.cleanup()
print("ok")
"""


def test_ipv6_endpoint_allowed_ips_fwmark_and_keepalive(tmp_path: Path, namespaces: list[str]) -> None:
    site = lone_site(tmp_path, namespaces, "v6")
    done = site.exec(sys.executable, "-c", IPV6_AND_FWMARK, site.ifname, check=False, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


BACKEND_300 = """
import json, sys, time
from wgmesh import keys
from wgmesh.agent.plan import AddPeer, plan_device
from wgmesh.agent.system.wireguard_kernel import KernelBackend
from wgmesh.agent.wgstate import DeviceSpec, PeerSpec, PrivateKey

peers = [
    PeerSpec(keys.generate_keypair().public_key,
             (f"100.96.{1 + i // 250}.{1 + i % 250}/32", f"198.18.{64 + i // 4}.{(i % 4) * 64}/27",
              f"198.18.{64 + i // 4}.{(i % 4) * 64 + 32}/27"),
             f"198.19.{i // 250}.{1 + i % 250}:{51820 + i}", keys.generate_keypair().public_key, 25)
    for i in range(300)
]
wg = KernelBackend(sys.argv[1])
me = PrivateKey(keys.generate_keypair().private_key)
wg.ensure_up(me, 51820)
started = time.monotonic()
wg.apply([AddPeer(p) for p in peers])
written = time.monotonic() - started
started = time.monotonic()
seen = wg.observe()
read = time.monotonic() - started
want = DeviceSpec.of(listen_port=51820, peers=peers, private_key=me, fwmark=0)
assert seen.spec.peers == want.peers, "read back differs"
assert plan_device(want, seen.spec) == []
wg.cleanup()
print(json.dumps({"write": written, "read": read}))
"""


def test_300_peers_through_the_kernel_backend_alone(tmp_path: Path, namespaces: list[str]) -> None:
    site = lone_site(tmp_path, namespaces, "be")
    done = site.exec(sys.executable, "-c", BACKEND_300, site.ifname, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    times = json.loads(done.stdout)
    record_figure(
        "KernelBackend: write 300 peers x 3 allowed IPs + PSK (300 netlink requests)",
        f"{times['write']:.2f} s",
    )
    record_figure("KernelBackend: read them back (one dump, every message merged)", f"{times['read']:.2f} s")
