"""POST /api/v1/status: the source address becomes the public IP; X-Forwarded-For only behind a
trusted proxy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from coordinator_harness import (
    Api,
    Enrolled,
    assert_error,
    create_token,
    enroll,
    netmap,
    peers_by_name,
    running,
    unchanged,
)
from inprocess_harness import InProcessCoordinator
from starlette.requests import Request

from wgmesh import ipam, keys
from wgmesh.coordinator.handlers.auth import client_address

BACKENDS = ("sqlite", "postgresql")
"""Run on both databases, through the same code (tests/api/conftest.py)."""


def mesh(coordinator: Api, admin: httpx.Client) -> dict[str, Enrolled]:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.anonymous() as anon:
        return {name: enroll(anon, token, name, listen_port=51821) for name in ("gw-a", "gw-b")}


@pytest.fixture(scope="module")
def nodes(coordinator: Api, admin: httpx.Client) -> dict[str, Enrolled]:
    return mesh(coordinator, admin)


@pytest.fixture(scope="module")
def proxied(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[InProcessCoordinator, dict[str, Enrolled]]]:
    tmp = tmp_path_factory.mktemp("proxied")
    c = InProcessCoordinator(db=tmp / "c.db", log=tmp / "c.log", extra=("--trusted-proxy", "127.0.0.0/8"))
    with running(c), c.admin() as admin:
        yield c, mesh(c, admin)


def report(
    c: Api, node: Enrolled, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    with c.node(node.credential) as client:
        return client.post("/api/v1/status", json=body, headers=headers or {})


def public_ip(admin: httpx.Client, name: str) -> str | None:
    r = admin.get(f"/api/v1/nodes/{name}")
    assert r.status_code == 200, r.text
    value = r.json()["public_ip"]
    return None if value is None else str(value)


def test_status_records_the_source_address_and_reaches_the_peers(
    coordinator: Api, admin: httpx.Client, nodes: dict[str, Enrolled]
) -> None:
    a, b = nodes["gw-a"], nodes["gw-b"]
    peer_key = b.keypair.public_key
    body = {
        "endpoints": ["198.51.100.7:51821"],
        "eth0_ip": "10.1.0.5",
        "netmap_version": 3,
        "peers": [{"public_key": peer_key, "rx_bytes": 10, "tx_bytes": 20, "path": "direct", "rtt_ms": 1.5}],
    }
    before = netmap(coordinator, b)["version"]
    r = report(coordinator, a, body, {"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True
    node = admin.get("/api/v1/nodes/gw-a").json()
    assert node["public_ip"] == "127.0.0.1"  # X-Forwarded-For ignored: no trusted proxy
    assert node["eth0_ip"] == "10.1.0.5"
    assert node["endpoints"] == ["198.51.100.7:51821"]
    assert node["online"] is True
    seen = netmap(coordinator, b)
    assert seen["version"] > before
    peer = peers_by_name(seen)["gw-a"]
    assert peer["public_ip"] == "127.0.0.1"
    assert peer["eth0_ip"] == "10.1.0.5"
    assert peer["endpoints"] == ["198.51.100.7:51821", "127.0.0.1:51821", "10.1.0.5:51821"]
    stored = admin.get("/api/v1/nodes/gw-a/status").json()
    assert stored["node"] == "gw-a"
    assert stored["report"]["peers"][0]["public_key"] == peer_key

    again = report(coordinator, a, body)
    assert again.json() == {"version": seen["version"], "changed": False}  # nothing new for the peers


def test_a_node_that_never_reported_has_no_status(admin: httpx.Client, nodes: dict[str, Enrolled]) -> None:
    assert_error(admin.get("/api/v1/nodes/gw-b/status"), 404, "no_status")
    assert_error(admin.get("/api/v1/nodes/nobody/status"), 404, "unknown_node")


@pytest.mark.parametrize(
    "body",
    [
        {"endpoints": ["not-an-endpoint"]},
        {"endpoints": ["198.51.100.7:0"]},
        {"eth0_ip": "10.1.0.300"},
        {"peers": [{"public_key": "short"}]},
        {"peers": [{"public_key": keys.generate_keypair().public_key, "rx_bytes": -1}]},
        {"peers": [{"public_key": keys.generate_keypair().public_key, "path": "carrier-pigeon"}]},
        {"shadowed": [{"prefix": "10.1.0.5/16", "interface": "eth1"}]},
        {"uptime": 5},
    ],
)
def test_bad_status_reports_are_422_and_change_nothing(
    coordinator: Api, admin: httpx.Client, nodes: dict[str, Enrolled], body: dict[str, Any]
) -> None:
    with unchanged(admin):
        assert_error(report(coordinator, nodes["gw-b"], body), 422, "invalid")
    assert public_ip(admin, "gw-b") is None


def test_behind_a_trusted_proxy_x_forwarded_for_is_the_public_ip(
    proxied: tuple[Api, dict[str, Enrolled]],
) -> None:
    c, nodes = proxied
    with c.admin() as admin:
        assert report(c, nodes["gw-a"], {}, {"X-Forwarded-For": "203.0.113.9"}).status_code == 200
        assert public_ip(admin, "gw-a") == "203.0.113.9"
        # The right-most address not inside a trusted network is the client.
        chain = {"X-Forwarded-For": "192.0.2.1, 203.0.113.10, 127.0.0.5"}
        assert report(c, nodes["gw-a"], {}, chain).status_code == 200
        assert public_ip(admin, "gw-a") == "203.0.113.10"
        # Garbage in the header falls back to the source address.
        assert report(c, nodes["gw-a"], {}, {"X-Forwarded-For": "not an address"}).status_code == 200
        assert public_ip(admin, "gw-a") == "127.0.0.1"
        assert report(c, nodes["gw-b"], {}).status_code == 200
        assert public_ip(admin, "gw-b") == "127.0.0.1"
        assert peers_by_name(netmap(c, nodes["gw-b"]))["gw-a"]["public_ip"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("127.0.0.1", "203.0.113.9", [], "127.0.0.1"),  # no trusted proxy: header ignored
        ("127.0.0.1", "203.0.113.9", ["10.0.0.0/8"], "127.0.0.1"),  # peer is not a trusted proxy
        ("10.0.0.2", "203.0.113.9", ["10.0.0.0/8"], "203.0.113.9"),
        ("10.0.0.2", "198.51.100.1, 203.0.113.9, 10.0.0.7", ["10.0.0.0/8"], "203.0.113.9"),
        ("10.0.0.2", "10.0.0.9, 10.0.0.7", ["10.0.0.0/8"], "10.0.0.2"),  # only proxies: the peer
        ("10.0.0.2", "", ["10.0.0.0/8"], "10.0.0.2"),
        ("10.0.0.2", "bogus", ["10.0.0.0/8"], "10.0.0.2"),
        ("fd00::2", "2001:db8::9", ["fd00::/8"], "2001:db8::9"),
    ],
)
def test_client_address_honours_x_forwarded_for_only_from_trusted_proxies(
    peer: str, forwarded: str, trusted: list[str], expected: str
) -> None:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    request = Request({"type": "http", "client": (peer, 40000), "headers": headers})
    assert client_address(request, [ipam.parse_cidr(t) for t in trusted]) == expected
