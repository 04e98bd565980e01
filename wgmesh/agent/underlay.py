"""What the agent can tell about its underlay: the local address it reaches the coordinator from, and
the MTU of the link its WireGuard packets leave by."""

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


def _link_mtu(ipr: object, index: int) -> int | None:
    for link in ipr.get_links(index):  # type: ignore[attr-defined]
        value = link.get_attr("IFLA_MTU")
        if value:
            return int(value)
    return None


def underlay_mtu(coordinator_url: str) -> tuple[int, bool] | None:
    """(MTU, over IPv6) of the link WireGuard's packets leave by: the default route's, else the one
    towards the coordinator; a route's own `mtu` metric lowers it. None when no such link is found."""
    from pyroute2 import IPRoute  # noqa: PLC0415 - netlink only where it is used

    host = local_address_towards(coordinator_url)
    with IPRoute() as ipr:
        routes = list(ipr.get_default_routes(family=socket.AF_INET))
        ipv6 = False
        if not routes and host is not None:
            ipv6 = ipaddress.ip_address(host).version == 6
            target = urlsplit(coordinator_url).hostname or ""
            try:
                family = socket.AF_INET6 if ipv6 else socket.AF_INET
                dst = socket.getaddrinfo(target, 9, family=family, type=socket.SOCK_DGRAM)[0][4][0]
                routes = list(ipr.route("get", dst=dst))
            except (OSError, IndexError):
                routes = []
        for route in routes:
            oif = route.get_attr("RTA_OIF")
            if oif is None:
                continue
            mtu = _link_mtu(ipr, oif)
            if mtu is None:
                continue
            metrics = route.get_attr("RTA_METRICS")
            locked = metrics.get_attr("RTAX_MTU") if metrics is not None else None
            return (min(mtu, int(locked)) if locked else mtu), ipv6
    return None
