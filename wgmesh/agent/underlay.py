"""What the agent can tell about its underlay: the local address it reaches the coordinator from."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def local_address_towards(url: str) -> str | None:
    """The source address the kernel would use to reach `url`'s host (no packet is sent)."""
    host = urlsplit(url).hostname
    if host is None:
        return None
    try:
        infos = socket.getaddrinfo(host, 9, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    for family, _, _, _, sockaddr in infos:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                # connect() on a UDP socket only picks a route and a source address.
                sock.connect(sockaddr)
            except OSError:
                continue
            address = ipaddress.ip_address(sock.getsockname()[0])
            if not address.is_loopback:
                return str(address)
    return None


def default_route_address() -> str | None:
    """The first IPv4 address of the interface holding the default route, if there is one."""
    from pyroute2 import IPRoute  # noqa: PLC0415 - netlink only where it is used

    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=socket.AF_INET):
            oif = route.get("RTA_OIF") or route.get_attr("RTA_OIF")
            if oif is None:
                continue
            for addr in ipr.get_addr(family=socket.AF_INET, index=oif):
                value = addr.get_attr("IFA_ADDRESS")
                if value:
                    return str(value)
    return None


def eth0_address(coordinator_url: str) -> str | None:
    """The gateway's private (eth0) address: the default route's interface, else the way to the coordinator."""
    try:
        found = default_route_address()
    except OSError:
        found = None
    return found or local_address_towards(coordinator_url)
