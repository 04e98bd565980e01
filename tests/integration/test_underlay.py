"""What the agent reads of its underlay (agent/system/underlay.py), in a namespace of the test's own."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest
from netns_harness import remove_namespaces, sh

from wgmesh.lab.timescale import scaled

pytestmark = pytest.mark.e2e

PROBE = "import json, sys; from wgmesh.agent.system.underlay import underlay_mtu; print(json.dumps(underlay_mtu(sys.argv[1])))"


@pytest.fixture
def namespace() -> Iterator[str]:
    ns = f"wgu{secrets.token_hex(3)}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        # Both ends in the namespace: a link with carrier, and nothing outside it.
        sh("ip", "-n", ns, "link", "add", "eth0", "mtu", "1460", "type", "veth", "peer", "name", "far0")
        sh("ip", "-n", ns, "addr", "add", "198.18.77.10/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "far0", "up")
        yield ns
    finally:
        remove_namespaces([ns])


def in_namespace(ns: str, script: str, *args: str) -> object:
    """What `script` prints as JSON, run with `args` inside the namespace."""
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=scaled(60),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def underlay(ns: str, coordinator: str = "http://198.18.77.1:8080") -> object:
    return in_namespace(ns, PROBE, coordinator)


def test_default_route_link_route_metric_and_the_way_to_the_coordinator(namespace: str) -> None:
    # No default route: the link the kernel picks towards the coordinator.
    assert underlay(namespace) == [1460, False]
    # The default route's link, lowered by the route's own mtu metric (as a cloud's DHCP may set it).
    sh(
        "ip",
        "-n",
        namespace,
        "route",
        "add",
        "default",
        "via",
        "198.18.77.1",
        "dev",
        "eth0",
        "mtu",
        "lock",
        "1400",
    )
    assert underlay(namespace) == [1400, False]
    # A global IPv6 default route: peers may come over IPv6, so the caller counts IPv6's overhead.
    sh("ip", "-n", namespace, "addr", "add", "2001:db8:77::10/64", "dev", "eth0", "nodad")
    sh("ip", "-n", namespace, "-6", "route", "add", "default", "via", "2001:db8:77::1", "dev", "eth0")
    assert underlay(namespace) == [1400, True]


def test_no_way_to_the_coordinator_is_unknown(namespace: str) -> None:
    assert underlay(namespace, "http://203.0.113.9:8080") is None  # no route: nothing is sent, None


PROTECTED = (
    "import json, sys; from wgmesh.agent.route_guard import Protected; "
    "from wgmesh.agent.system.underlay import protected_addresses; "
    "old = Protected(coordinator=(__import__('ipaddress').ip_address('192.0.2.99'),)); "
    "p = protected_addresses(sys.argv[1], sys.argv[2:], old); "
    "print(json.dumps([[str(a) for a in g] for g in (p.coordinator, p.relays, p.next_hops)]))"
)


def protected(ns: str, coordinator: str, *relays: str) -> object:
    return in_namespace(ns, PROTECTED, coordinator, *relays)


def test_protected_addresses_name_the_coordinator_relays_and_next_hops(namespace: str) -> None:
    sh("ip", "-n", namespace, "route", "add", "default", "via", "198.18.77.1")
    sh("ip", "-n", namespace, "route", "add", "203.0.113.0/24", "via", "198.18.77.2")
    assert protected(
        namespace, "https://203.0.113.5:8443", "tls://198.51.100.7:443", "tcp://[2001:db8::7]:443"
    ) == [
        ["203.0.113.5"],
        ["198.51.100.7", "2001:db8::7"],
        ["198.18.77.1", "198.18.77.2"],
    ]
    # A host that does not resolve keeps the addresses known before: resolution failing lifts no protection.
    assert protected(namespace, "https://:8443") == [["192.0.2.99"], [], ["198.18.77.1"]]
