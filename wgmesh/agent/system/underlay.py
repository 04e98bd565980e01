"""What the agent can tell about its underlay: the local address it reaches the coordinator from, and
the MTU of the link its WireGuard packets leave by."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from wgmesh.agent.route_guard import Protected
from wgmesh.values import IpAddress


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


def _link_mtu(ipr: Any, index: int) -> int | None:
    for link in ipr.get_links(index):
        value = link.get_attr("IFLA_MTU")
        if value:
            return int(value)
    return None


def _route_mtu(ipr: Any, route: Any) -> int | None:
    """The MTU a route leaves by: its link's, lowered by the route's own `mtu` metric."""
    oif = route.get_attr("RTA_OIF")
    if oif is None:
        return None  # a multipath route names its links elsewhere: the caller asks the kernel instead
    mtu = _link_mtu(ipr, oif)
    if mtu is None:
        return None
    metrics = route.get_attr("RTA_METRICS")
    locked = metrics.get_attr("RTAX_MTU") if metrics is not None else None
    return min(mtu, int(locked)) if locked else mtu


def underlay_mtu(coordinator_url: str) -> tuple[int, bool] | None:
    """(MTU, IPv6 possible) of the link WireGuard's packets leave by; None when none is found.

    The link is the IPv4 default route's, else the one the kernel picks towards the coordinator. The
    second value says whether peers may reach this node over IPv6 (a global IPv6 default route, or the
    coordinator reached over IPv6): WireGuard's overhead is then 80 bytes, not 60. Netlink failures
    come out as OSError.
    """
    from pyroute2 import IPRoute  # noqa: PLC0415 - netlink only where it is used
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

    try:
        with IPRoute() as ipr:
            ipv6 = bool(list(ipr.get_default_routes(family=socket.AF_INET6)))
            for route in ipr.get_default_routes(family=socket.AF_INET):
                found = _route_mtu(ipr, route)
                if found is not None:
                    return found, ipv6
            host = local_address_towards(coordinator_url)
            if host is None:
                return None
            for route in ipr.route("get", dst=_coordinator_address(coordinator_url, host)):
                found = _route_mtu(ipr, route)
                if found is not None:
                    return found, ipv6 or ipaddress.ip_address(host).version == 6
    except NetlinkError as exc:
        raise OSError(f"netlink: {exc}") from exc
    return None


def _coordinator_address(url: str, local: str) -> str:
    """The coordinator's address in the family of `local` (the source address towards it)."""
    family = socket.AF_INET6 if ipaddress.ip_address(local).version == 6 else socket.AF_INET
    host = urlsplit(url).hostname or ""
    return str(socket.getaddrinfo(host, 9, family=family, type=socket.SOCK_DGRAM)[0][4][0])


def resolve_host(url: str) -> tuple[IpAddress, ...]:
    """Every address `url`'s host resolves to (an address literal is itself); () when it does not resolve."""
    host = urlsplit(url).hostname
    if not host:
        return ()
    try:
        infos = socket.getaddrinfo(host, 9, type=socket.SOCK_DGRAM)
    except OSError:
        return ()
    found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    return tuple(dict.fromkeys(found))


def next_hops(coordinator_url: str) -> tuple[IpAddress, ...]:
    """The gateways the agent's underlay traffic leaves by: of the default routes (both families) and of
    the route towards the coordinator. Netlink failures come out as OSError."""
    from pyroute2 import IPRoute  # noqa: PLC0415 - netlink only where it is used
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

    found: list[IpAddress] = []
    try:
        with IPRoute() as ipr:
            routes = [
                *ipr.get_default_routes(family=socket.AF_INET),
                *ipr.get_default_routes(family=socket.AF_INET6),
            ]
            for address in resolve_host(coordinator_url):
                with contextlib.suppress(NetlinkError):  # no route to it now: the default routes still count
                    routes.extend(ipr.route("get", dst=str(address)))
            for route in routes:
                gateway = route.get_attr("RTA_GATEWAY")
                if gateway:
                    found.append(ipaddress.ip_address(str(gateway).split("%")[0]))
    except NetlinkError as exc:
        raise OSError(f"netlink: {exc}") from exc
    return tuple(dict.fromkeys(found))


def protected_addresses(
    coordinator_urls: str | Sequence[str], relay_urls: Sequence[str], previous: Protected
) -> Protected:
    """The addresses no netmap route may cover (agent/route_guard.py), resolved now: every coordinator's.

    A group that fails to resolve (DNS down, netlink refused) keeps its previous addresses: an outage
    of the resolver must not lift the protection it exists for.
    """
    coordinators = [coordinator_urls] if isinstance(coordinator_urls, str) else list(coordinator_urls)
    relays = tuple(dict.fromkeys(a for url in relay_urls for a in resolve_host(url)))
    try:
        hops = tuple(dict.fromkeys(h for url in coordinators for h in next_hops(url)))
    except OSError:
        hops = previous.next_hops
    found = tuple(dict.fromkeys(a for url in coordinators for a in resolve_host(url)))
    return Protected(
        coordinator=found or previous.coordinator,
        relays=relays if relays or not relay_urls else previous.relays,
        next_hops=hops,
    )
