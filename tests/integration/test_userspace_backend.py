"""The data plane for real: wireguard-go in two network namespaces, pings over the overlay.

Every address used lives inside the test's namespaces (198.18.1.0/24 underlay, 100.96.0.0/16
overlay, 10.x VPC subnets); nothing is sent anywhere else. Path expected throughout: direct UDP.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from netns_harness import Pair, leftovers, running, sh

from wgmesh import keys
from wgmesh.agent.system.wireguard_uapi import SOCKET_DIR
from wgmesh.lab.wait import wait_until

pytestmark = pytest.mark.e2e


def _rtt_ms(ping_output: str) -> float:
    match = re.search(r"= [\d.]+/([\d.]+)/", ping_output)
    assert match, ping_output
    return float(match.group(1))


def connect(pair: Pair) -> None:
    """Both sites up with each other as peers, and a ping through within 5 s."""
    for site in (pair.a, pair.b):
        site.start()
        site.w.call("up")
    pair.a.apply(pair.b.as_peer(2))
    pair.b.apply(pair.a.as_peer(1))
    wait_until(lambda: pair.a.ping(pair.b.overlay).returncode == 0, 5, "a ping from a to b over the overlay")


def test_ping_across_the_overlay_wg_show_routes_and_zero_ops_the_second_time(pair: Pair) -> None:
    a, b = pair.a, pair.b
    connect(pair)
    # wg show lists the peer with its overlay /32 and its subnet
    assert a.wg_dump()[b.keypair.public_key] == {
        "endpoint": f"{b.underlay}:{b.port}",
        "allowed_ips": f"{b.subnet},{b.overlay}/32",
    }
    assert f"{b.subnet} dev {a.ifname} proto 119" in a.routes()
    assert f"{b.overlay} dev {a.ifname} proto 119" in a.routes()
    assert f"100.96.0.0/16 dev {a.ifname} proto kernel" in a.routes()
    assert a.exec("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    assert "mtu 1420" in a.exec("ip", "link", "show", a.ifname).stdout
    # the subnet route carries traffic: B's LAN address answers through the tunnel
    b.exec("ip", "link", "add", f"{pair.prefix}lan", "type", "bridge")
    b.exec("ip", "addr", "add", "10.2.0.1/24", "dev", f"{pair.prefix}lan")
    b.exec("ip", "link", "set", f"{pair.prefix}lan", "up")
    wait_until(lambda: a.ping("10.2.0.1").returncode == 0, 5, "a ping from a to b's LAN address")
    again = a.apply(b.as_peer(2))
    assert again["operations"] == 0, again
    rtt = _rtt_ms(a.ping(b.overlay, count=10).stdout)
    print(f"overlay ping RTT (wireguard-go, veth): {rtt:.3f} ms avg over 10")
    stats = a.w.call("stats")["peers"]
    assert stats[0]["public_key"] == b.keypair.public_key
    assert stats[0]["rx_bytes"] > 0 and stats[0]["last_handshake"] is not None
    assert stats[0]["endpoint"] == f"{b.underlay}:{b.port}"


def test_endpoint_change_keeps_allowed_ips(pair: Pair) -> None:
    a, b = pair.a, pair.b
    connect(pair)
    b.exec("ip", "addr", "add", "198.18.1.3/24", "dev", b.veth)
    result = a.apply(b.as_peer(2, endpoints=[f"198.18.1.3:{b.port}"]))
    assert (result["device_ops"], result["route_ops"]) == (1, 0), result
    assert a.wg_dump()[b.keypair.public_key] == {
        "endpoint": f"198.18.1.3:{b.port}",
        "allowed_ips": f"{b.subnet},{b.overlay}/32",
    }
    assert a.ping(b.overlay).returncode == 0


def test_roaming_is_not_fought(pair: Pair) -> None:
    a, b = pair.a, pair.b
    connect(pair)
    netmap_endpoint = f"{b.underlay}:{b.port}"
    # B moves to another port before A's netmap knows: B's packets now come from there, and
    # WireGuard on A roams B's endpoint to it. Setting it back to the netmap's would cut the tunnel.
    b.port = 51900
    b.w.call(
        "init", ifname=b.ifname, backend="userspace", private_key=b.keypair.private_key, listen_port=b.port
    )
    assert b.apply(a.as_peer(1))["device_ops"] == 1  # SetListenPort, on the running device
    roamed = f"{b.underlay}:{b.port}"
    wait_until(
        lambda: b.ping(a.overlay).returncode == 0 and a.wg_dump()[b.keypair.public_key]["endpoint"] == roamed,
        5,
        "a to roam b's endpoint",
    )
    result = a.apply(b.as_peer(2, endpoints=[netmap_endpoint]))
    assert result["operations"] == 0, result
    assert a.wg_dump()[b.keypair.public_key]["endpoint"] == roamed
    assert a.ping(b.overlay).returncode == 0


def test_removing_a_peer_removes_only_it_and_its_routes(pair: Pair) -> None:
    a, b = pair.a, pair.b
    connect(pair)
    ghost = keys.generate_keypair()
    third = b.as_peer(
        3,
        name="site3",
        public_key=ghost.public_key,
        overlay_ip="100.96.0.3",
        allowed_ips=["100.96.0.3/32", "10.3.0.0/24"],
        endpoints=[],
    )
    assert a.apply(b.as_peer(2), third)["device_ops"] == 1
    assert "10.3.0.0/24 dev" in a.routes()
    result = a.apply(b.as_peer(2))
    assert (result["device_ops"], result["route_ops"]) == (1, 2), result
    assert list(a.wg_dump()) == [b.keypair.public_key]
    assert a.wg_dump()[b.keypair.public_key]["allowed_ips"] == f"{b.subnet},{b.overlay}/32"
    assert "10.3.0.0/24" not in a.routes() and "100.96.0.3" not in a.routes()
    assert a.ping(b.overlay).returncode == 0


def test_remote_subnet_overlapping_a_local_one_is_shadowed(pair: Pair) -> None:
    a, b = pair.a, pair.b
    connect(pair)
    lan = f"{pair.prefix}l50"
    # No dummy driver on this kernel: an empty bridge holds a local subnet just as well.
    a.exec("ip", "link", "add", lan, "type", "bridge")
    a.exec("ip", "addr", "add", "10.2.0.1/24", "dev", lan)
    result = a.apply(b.as_peer(2))
    assert result["shadowed"] == [
        {"prefix": b.subnet, "gateway": "site2", "interface": lan, "local_prefix": "10.2.0.0/24"}
    ]
    assert f"{b.subnet} dev {a.ifname}" not in a.routes()
    assert a.ping(b.overlay).returncode == 0  # the rest of the peer still works
    a.exec("ip", "link", "del", lan)
    result = a.apply(b.as_peer(2))
    assert result["shadowed"] == [] and result["route_ops"] == 1
    assert f"{b.subnet} dev {a.ifname}" in a.routes()


def test_a_foreign_route_for_the_same_prefix_is_left_alone(pair: Pair) -> None:
    a, b = pair.a, pair.b
    # An operator's static route for exactly B's subnet, via the underlay: not the agent's to replace.
    a.exec("ip", "route", "add", b.subnet, "dev", a.veth)
    connect(pair)
    assert f"{b.subnet} dev {a.veth}" in a.routes()
    assert f"{b.subnet} dev {a.ifname}" not in a.routes()
    assert f"{b.overlay} dev {a.ifname} proto 119" in a.routes()


def test_masquerade_lets_a_vpc_host_without_a_route_back_answer(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.start(masquerade=True)
    b.start()
    for site in (a, b):
        site.w.call("up")
    # A VPC host behind A whose only route is its own subnet: it cannot answer 100.96.0.2 by itself.
    vm = f"{pair.prefix}v"
    pair.extra_ns.append(vm)
    sh("ip", "netns", "add", vm)
    sh(
        "ip",
        "link",
        "add",
        f"{pair.prefix}vl",
        "netns",
        a.ns,
        "type",
        "veth",
        "peer",
        "name",
        f"{pair.prefix}vv",
        "netns",
        vm,
    )
    sh("ip", "-n", a.ns, "addr", "add", "10.1.0.1/24", "dev", f"{pair.prefix}vl")
    sh("ip", "-n", vm, "addr", "add", "10.1.0.10/24", "dev", f"{pair.prefix}vv")
    sh("ip", "-n", a.ns, "link", "set", f"{pair.prefix}vl", "up")
    sh("ip", "-n", vm, "link", "set", f"{pair.prefix}vv", "up")
    a.apply(b.as_peer(2))
    b.apply(a.as_peer(1))
    wait_until(
        lambda: b.ping("10.1.0.10").returncode == 0, 5, "b to reach the VPC host behind a (masqueraded)"
    )
    # without masquerade the host's answer has no way back
    a.w.call(
        "init", ifname=a.ifname, backend="userspace", private_key=a.keypair.private_key, listen_port=a.port
    )
    assert a.apply(b.as_peer(2))["operations"] == 1  # the nftables table, removed
    assert b.ping("10.1.0.10").returncode != 0


def test_a_restarted_agent_adopts_the_running_interface(pair: Pair) -> None:
    a, b = pair.a, pair.b
    connect(pair)
    first_pid = a.w.call("up")["pid"]
    a.w.call("close")
    a.w.stop()  # the agent exits; the data plane stays
    assert a.ping(b.overlay).returncode == 0
    a.start()
    assert a.w.call("up")["pid"] == first_pid
    assert a.apply(b.as_peer(2))["operations"] == 0
    assert a.ping(b.overlay).returncode == 0


def test_a_dead_wireguard_go_is_restarted_and_refilled(pair: Pair) -> None:
    a, b = pair.a, pair.b
    connect(pair)
    pid = a.w.call("up")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: a.ifname not in a.exec("ip", "-o", "link").stdout, 5, "the dead tun to go")
    result = a.apply(b.as_peer(2))
    assert result["device_ops"] == 1 and result["route_ops"] == 2, result
    assert a.w.call("up")["pid"] != pid
    wait_until(lambda: a.ping(b.overlay).returncode == 0, 5, "the tunnel to come back")


def test_an_interface_name_in_use_in_another_namespace_is_refused(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.start()
    a.w.call("up")
    b.start()
    b.w.call(
        "init", ifname=a.ifname, backend="userspace", private_key=b.keypair.private_key, listen_port=b.port
    )
    answer = b.w.try_call("up")
    assert answer["ok"] is False and answer["code"] == "interface_in_use", answer
    assert a.ifname in a.exec("ip", "-o", "link").stdout  # and a's device is untouched


def test_cleanup_removes_interface_routes_table_process_and_socket(pair: Pair) -> None:
    a, b = pair.a, pair.b
    for site in (a, b):
        site.start(masquerade=True)
        site.w.call("up")
    a.apply(b.as_peer(2))
    b.apply(a.as_peer(1))
    wait_until(lambda: a.ping(b.overlay).returncode == 0, 5, "a ping from a to b")
    pids = {site.ns: site.w.call("up")["pid"] for site in (a, b)}
    # a: the running agent cleans up; b: `wgmesh-agent cleanup` after the agent has exited
    a.w.call("cleanup")
    b.w.call("close")
    b.w.stop()
    b.start().call("cleanup_interface", ifname=b.ifname)
    for site in (a, b):
        assert site.ifname not in site.exec("ip", "-o", "link").stdout
        assert site.ifname not in site.routes()
        assert "wgmesh" not in site.exec("nft", "list", "tables").stdout
        assert not running(pids[site.ns])
        assert not (SOCKET_DIR / f"{site.ifname}.sock").exists()
    assert sorted(leftovers(pair.prefix)) == [a.ns, b.ns]  # only the namespaces, which teardown removes


def test_three_hundred_peers(pair: Pair) -> None:
    """Figures: time to add 300 peers (600 routes), to re-apply, and to change one endpoint."""
    a, b = pair.a, pair.b
    a.start()
    a.w.call("up")
    peers = [b.as_peer(2)]
    for i in range(300):
        overlay = f"100.96.{1 + i // 250}.{1 + i % 250}"
        peers.append(
            b.as_peer(
                1000 + i,
                name=f"n{i}",
                public_key=keys.generate_keypair().public_key,
                overlay_ip=overlay,
                allowed_ips=[f"{overlay}/32", f"10.{100 + i // 250}.{i % 250}.0/24"],
                # inside the test namespaces: b's address, a port nobody listens on
                endpoints=[f"{b.underlay}:{20000 + i}"],
            )
        )
    started = time.monotonic()
    first = a.apply(*peers)
    took = time.monotonic() - started
    assert first["device_ops"] == 301 and first["route_ops"] == 602, first
    assert len(a.wg_dump()) == 301
    started = time.monotonic()
    second = a.apply(*peers)
    again = time.monotonic() - started
    assert second["operations"] == 0
    peers[150] = peers[150].model_copy(update={"endpoints": [f"{b.underlay}:30150"]})
    started = time.monotonic()
    third = a.apply(*peers)
    one = time.monotonic() - started
    assert (third["device_ops"], third["route_ops"]) == (1, 0)
    print(
        f"300 peers over UAPI: first apply {took * 1000:.0f} ms (apply itself {first['seconds'] * 1000:.0f} ms), "
        f"re-apply {again * 1000:.0f} ms, one endpoint change {one * 1000:.0f} ms"
    )
