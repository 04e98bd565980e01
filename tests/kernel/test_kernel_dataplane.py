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
from wgmesh.lab import down, up, wait_until
from wgmesh.lab.timescale import scaled
from wgmesh.models import PeerConfig

pytestmark = pytest.mark.kernel

BASE = int(ipaddress.ip_address("198.18.64.0"))
PEERS = 60


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
            "allowed_ips": sorted(map(str, p.allowed_ips)),
            "endpoint": str(p.endpoints[0]) if p.endpoints else None,
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


def test_dataplane_peers_and_routes_read_back_and_second_apply_is_empty(
    tmp_path: Path, namespaces: list[str]
) -> None:
    """The DataPlane over the kernel backend: device and routes. Netlink at scale (300 peers, messages
    continued) is test_kernel_backend_alone's; 60 peers keep this one short under emulation."""
    site = lone_site(tmp_path, namespaces, "big")
    worker = start(site, "kernel")
    peers = many_peers(PEERS)

    first = worker.call("apply", netmap=site.netmap(*peers).model_dump(mode="json"))
    started = time.monotonic()
    observed = seen(worker)
    read = time.monotonic() - started

    assert observed == expected(peers)
    dump = wg_dump(site)
    assert len(dump) == PEERS
    for p in peers:
        assert dump[p.public_key]["psk"] == (p.psk or "(none)")
        assert dump[p.public_key]["allowed_ips"] == ",".join(sorted(map(str, p.allowed_ips)))
    routes = site.routes()
    assert all(f"{p.allowed_ips[1]} dev {site.ifname}" in routes for p in peers)

    second = worker.call("apply", netmap=site.netmap(*peers).model_dump(mode="json"))
    assert second["operations"] == 0, second
    record_figure(
        f"DataPlane, {PEERS} peers x 3 allowed IPs: first apply (device + {3 * PEERS} routes)",
        f"{first['seconds']:.2f} s",
    )
    record_figure(f"DataPlane, {PEERS} peers: read back (observe, via worker)", f"{read:.2f} s")
    record_figure(f"DataPlane, {PEERS} peers: second apply (zero operations)", f"{second['seconds']:.2f} s")


def test_two_namespaces_ping_and_tcp_over_kernel_wireguard(pair: Pair) -> None:
    a, b = pair.a, pair.b
    # `auto` picks the kernel when the module loads, as on a gateway; the other side asks for it.
    start(a, "auto", expect="kernel")
    assert "wireguard" in sh("ip", "-n", a.ns, "-d", "link", "show", a.ifname).stdout
    start(b, "kernel")
    a.apply(b.as_peer(2))
    b.apply(a.as_peer(1))

    wait_until(lambda: a.ping(b.overlay).returncode == 0, 15, "a ping across kernel WireGuard")
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
        wait_until(lambda: ":5001 " in b.exec("ss", "-Hltn").stdout, 30, "the TCP receiver to listen")
        sent = a.exec(sys.executable, "-c", client, check=False, timeout=60)
        assert sent.returncode == 0, sent.stderr
        received, _ = srv.communicate(timeout=scaled(60))
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
        wait_until(
            lambda: (
                lab.exec("vm1", "ping", "-n", "-c", "1", "-W", "2", str(lab.plan.site(2).vm_ip)).returncode
                == 0
            ),
            30,
            "VPC 1 to ping VPC 2",
        )
    finally:
        down(name)


BACKEND_ALONE = """
import json, sys, time
from wgmesh import keys
from wgmesh.agent.plan import AddPeer, RemovePeer, SetEndpoint, SetFwmark, SetKeepalive, SetPsk, plan_device
from wgmesh.agent.system.wireguard_kernel import KernelBackend
from wgmesh.agent.wgstate import DeviceSpec, PeerSpec, PrivateKey
from wgmesh.values import Endpoint

ep = Endpoint.parse
wg = KernelBackend(sys.argv[1])
me = PrivateKey(keys.generate_keypair().private_key)
assert wg.ensure_up(me, 51820) is True
assert wg.ensure_up(me, 51820) is False  # adopted, not recreated

# 300 peers x 3 allowed IPs and a PSK, plus one whose 250 allowed IPs span several netlink messages.
peers = [
    PeerSpec(keys.generate_keypair().public_key,
             (f"100.96.{1 + i // 250}.{1 + i % 250}/32", f"198.18.{64 + i // 4}.{(i % 4) * 64}/27",
              f"198.18.{64 + i // 4}.{(i % 4) * 64 + 32}/27"),
             ep(f"198.19.{i // 250}.{1 + i % 250}:{51820 + i}"), keys.generate_keypair().public_key, 25)
    for i in range(300)
]
big = PeerSpec(keys.generate_keypair().public_key, tuple(f"10.251.{i}.0/24" for i in range(250)), None, None, 25)
started = time.monotonic()
wg.apply([AddPeer(p) for p in [*peers, big]])
written = time.monotonic() - started
started = time.monotonic()
seen = wg.observe()
read = time.monotonic() - started
assert seen.public_key == me.public_key and seen.spec.listen_port == 51820
want = DeviceSpec.of(listen_port=51820, peers=[*peers, big], private_key=me, fwmark=0)
assert seen.spec.peers == want.peers, "read back differs"
assert plan_device(want, seen.spec) == []

# An endpoint change keeps the allowed IPs (the big peer's too); removing a peer removes only it.
wg.apply([SetEndpoint(big.public_key, ep("198.18.1.2:51820")), RemovePeer(peers[0].public_key)])
after = wg.observe().spec.peers
assert after[big.public_key].endpoint == ep("198.18.1.2:51820")
assert after[big.public_key].allowed_ips == big.allowed_ips
assert len(after) == 300 and peers[0].public_key not in after

# An IPv6 endpoint and allowed IP, fwmark, keepalive set and cleared, a PSK rotated and cleared.
v6 = PeerSpec(keys.generate_keypair().public_key, ("2001:db8:1::/64", "100.96.7.7/32"), ep("[2001:db8::1]:51820"),
              None, 25)
wg.apply([SetFwmark(0x77), AddPeer(v6)])
seen = wg.observe()
assert seen.spec.fwmark == 0x77, seen.spec.fwmark
got = seen.spec.peers[v6.public_key]
assert got.endpoint == ep("[2001:db8::1]:51820"), got.endpoint
assert sorted(got.allowed_ips) == sorted(v6.allowed_ips), got.allowed_ips
assert got.keepalive == 25
rotated = keys.generate_keypair().public_key
wg.apply([SetEndpoint(v6.public_key, ep("198.18.3.3:4000")), SetKeepalive(v6.public_key, None),
          SetPsk(v6.public_key, rotated), SetPsk(peers[1].public_key, None)])
now = wg.observe().spec.peers
assert (now[v6.public_key].endpoint, now[v6.public_key].keepalive) == (ep("198.18.3.3:4000"), None), now[v6.public_key]
assert now[v6.public_key].psk == rotated and now[peers[1].public_key].psk is None
assert sorted(now[v6.public_key].allowed_ips) == sorted(v6.allowed_ips)
want = DeviceSpec.of(listen_port=51820, peers=list(now.values()), private_key=me, fwmark=0x77)
assert plan_device(want, wg.observe().spec) == []
wg.cleanup()
print(json.dumps({"write": written, "read": read}))
"""


def test_kernel_backend_alone(tmp_path: Path, namespaces: list[str]) -> None:
    """`KernelBackend` without the DataPlane, in one interpreter (each one costs seconds under emulation)."""
    site = lone_site(tmp_path, namespaces, "be")
    done = site.exec(sys.executable, "-c", BACKEND_ALONE, site.ifname, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    times = json.loads(done.stdout)
    record_figure(
        "KernelBackend: write 301 peers (3 allowed IPs + PSK; one with 250 allowed IPs)",
        f"{times['write']:.2f} s",
    )
    record_figure("KernelBackend: read them back (one dump, every message merged)", f"{times['read']:.2f} s")
