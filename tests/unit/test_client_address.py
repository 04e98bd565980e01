"""handlers.auth.client_address: where a request came from, one spelling per address."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request

from wgmesh.coordinator.handlers.auth import client_address


def request(host: str, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "client": (host, 40000), "headers": headers})


def test_an_ipv4_client_of_a_dual_stack_listener_is_its_ipv4_address() -> None:
    # Stored and compared with the node's public IP on every report and heartbeat: one spelling.
    assert client_address(request("::ffff:198.51.100.1"), []) == "198.51.100.1"
    assert client_address(request("198.51.100.1"), []) == "198.51.100.1"
    assert client_address(request("2001:db8::1"), []) == "2001:db8::1"


def test_a_mapped_proxy_is_trusted_by_its_ipv4_network_and_the_forwarded_address_normalised() -> None:
    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_address(request("::ffff:10.0.0.5", "::ffff:203.0.113.9"), trusted) == "203.0.113.9"
    assert client_address(request("::ffff:192.0.2.5", "203.0.113.9"), trusted) == "192.0.2.5"
