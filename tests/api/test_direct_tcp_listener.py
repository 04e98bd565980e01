"""Issue 21: an agent's direct TCP listener reaches its peers' netmaps (not those of pairs with P2P off),
reports name the `tcp-direct` path, and a bad listener is refused with nothing stored."""

from __future__ import annotations

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
    unchanged,
)

BACKENDS = ("sqlite", "postgresql")
"""Run on both databases, through the same code (tests/api/conftest.py)."""
PIN = "sha256:" + "5a" * 32


@pytest.fixture(scope="module")
def nodes(coordinator: Api, admin: httpx.Client) -> dict[str, Enrolled]:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.anonymous() as anon:
        return {name: enroll(anon, token, name, listen_port=51820) for name in ("tcp-a", "tcp-b", "tcp-c")}


def report(c: Api, node: Enrolled, body: dict[str, Any]) -> httpx.Response:
    with c.node(node.credential) as client:
        return client.post("/api/v1/status", json=body)


def test_a_listener_reaches_the_peers_but_not_a_pair_with_p2p_off(
    coordinator: Api, admin: httpx.Client, nodes: dict[str, Enrolled]
) -> None:
    a, b, c = nodes["tcp-a"], nodes["tcp-b"], nodes["tcp-c"]
    assert netmap(coordinator, b)["tcp_direct"] is True  # the coordinator says it takes listeners
    r = admin.put("/api/v1/pairs/tcp-a/tcp-c", json={"p2p": "off"})
    assert r.status_code == 200, r.text
    body = {
        "endpoints": ["198.51.100.7:51820"],
        "tcp": {"port": 51820, "pin": PIN.upper().replace("SHA256", "sha256")},
        "peers": [
            {"public_key": b.keypair.public_key, "path": "tcp-direct", "endpoint": "198.51.100.8:40000"}
        ],
    }
    r = report(coordinator, a, body)
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True
    assert admin.get("/api/v1/nodes/tcp-a").json()["tcp"] == {"port": 51820, "pin": PIN}  # one spelling
    assert peers_by_name(netmap(coordinator, b))["tcp-a"]["tcp"] == {"port": 51820, "pin": PIN}
    assert peers_by_name(netmap(coordinator, c))["tcp-a"]["tcp"] is None  # P2P off: the relay only
    stored = admin.get("/api/v1/nodes/tcp-a/status").json()["report"]
    assert stored["peers"][0]["path"] == "tcp-direct"
    again = report(coordinator, a, body)
    assert again.json()["changed"] is False  # the same listener again changes nothing for the peers
    # The listener gone (turned off): the peers learn it.
    r = report(coordinator, a, {"endpoints": ["198.51.100.7:51820"]})
    assert r.json()["changed"] is True
    assert peers_by_name(netmap(coordinator, b))["tcp-a"]["tcp"] is None


@pytest.mark.parametrize(
    "tcp",
    [
        {"port": 0, "pin": PIN},
        {"port": 65536, "pin": PIN},
        {"port": 51820, "pin": "sha256:zz"},
        {"port": 51820},
        "51820",
    ],
)
def test_a_bad_listener_is_refused_and_nothing_is_stored(
    coordinator: Api, admin: httpx.Client, nodes: dict[str, Enrolled], tcp: object
) -> None:
    with unchanged(admin):
        assert_error(report(coordinator, nodes["tcp-b"], {"tcp": tcp}), 422)
