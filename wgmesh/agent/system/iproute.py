"""The host side of the tunnel through pyroute2 `IPRoute`: link, address, routes, forwarding.

Routes the agent installs carry their own protocol number (`ROUTE_PROTO`), so it only ever lists and
withdraws its own and never touches a route someone else put on the interface.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from wgmesh.agent.plan import AddRoute, RouteOp
from wgmesh.errors import BackendError
from wgmesh.logs import kv

log = logging.getLogger("wgmesh.agent.routes")

ROUTE_PROTO = 0x77
"""rtnetlink protocol of the agent's routes (`ip route` shows `proto 119`)."""
MAIN_TABLE = 254
DISCARD_PORT = 9
"""Where `send_through` sends: the discard service. What counts is the handshake WireGuard makes to carry
the datagram; the peer drops it or answers with an ICMP error."""
_FORWARDING = {
    "ipv4": Path("/proc/sys/net/ipv4/ip_forward"),
    "ipv6": Path("/proc/sys/net/ipv6/conf/all/forwarding"),
}


@contextlib.contextmanager
def netlink(what: str, code: str = "netlink") -> Iterator[Any]:
    """An IPRoute socket for one batch of calls, with netlink errors turned into BackendError(`code`)."""
    from pyroute2 import IPRoute  # noqa: PLC0415 - netlink only where it is used

    try:
        with IPRoute() as ipr:
            yield ipr
    except BackendError:
        raise
    except Exception as exc:  # NetlinkError, OSError: one kind of failure for the caller
        raise BackendError(f"{what}: {exc}", code=code) from exc


def link_index(ipr: Any, ifname: str) -> int:
    """The index of `ifname`, or BackendError when it does not exist."""
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise BackendError(f"interface {ifname} does not exist", code="no_interface")
    return int(found[0])


def link_kind(ifname: str) -> str | None:
    """The link's kind (`wireguard`, `tun`, …, '' when it has none), or None when it does not exist."""
    with netlink(f"looking up {ifname}") as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        info = ipr.get_links(found[0])[0].get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        return str(kind or "")


class LinuxHost:
    """`HostNetwork` on Linux, in the network namespace the agent runs in."""

    def ensure_interface(self, ifname: str, address: str, prefixlen: int, mtu: int) -> int:
        """Link up, this MTU, and exactly `address/prefixlen` among the link's addresses of its family."""
        changes = 0
        want = ipaddress.ip_interface(f"{address}/{prefixlen}")
        family = socket.AF_INET if want.version == 4 else socket.AF_INET6
        with netlink(f"configuring {ifname}") as ipr:
            index = link_index(ipr, ifname)
            link = ipr.get_links(index)[0]
            if link.get("mtu") != mtu:
                ipr.link("set", index=index, mtu=mtu)
                changes += 1
            if not link["flags"] & 1:  # IFF_UP
                ipr.link("set", index=index, state="up")
                changes += 1
            present = False
            for addr in ipr.get_addr(index=index, family=family):
                have = ipaddress.ip_interface(f"{addr.get('address')}/{addr['prefixlen']}")
                if have == want:
                    present = True
                elif not have.ip.is_link_local:
                    # The overlay address changed (or someone added one): the tunnel holds one address.
                    ipr.addr("del", index=index, address=str(have.ip), prefixlen=have.network.prefixlen)
                    log.info("address removed", extra=kv(interface=ifname, address=str(have)))
                    changes += 1
            if not present:
                ipr.addr("add", index=index, address=str(want.ip), prefixlen=prefixlen)
                log.info("address set", extra=kv(interface=ifname, address=str(want)))
                changes += 1
        return changes

    def installed_routes(self, ifname: str) -> list[str]:
        """The agent's routes through `ifname` in the main table."""
        with netlink(f"listing routes of {ifname}") as ipr:
            index = ipr.link_lookup(ifname=ifname)
            if not index:
                return []
            routes = ipr.get_routes(table=MAIN_TABLE, oif=index[0], proto=ROUTE_PROTO)
            return sorted(f"{r.get('dst')}/{r['dst_len']}" for r in routes if r.get("dst"))

    def apply_routes(self, ifname: str, ops: Sequence[RouteOp]) -> None:
        """Add (replace) or delete routes through `ifname`."""
        if not ops:
            return
        with netlink(f"changing routes of {ifname}") as ipr:
            index = link_index(ipr, ifname)
            for op in ops:
                net = ipaddress.ip_network(op.prefix)
                family = socket.AF_INET if net.version == 4 else socket.AF_INET6
                fields = {
                    "dst": str(net),
                    "oif": index,
                    "proto": ROUTE_PROTO,
                    "table": MAIN_TABLE,
                    "family": family,
                }
                if isinstance(op, AddRoute):
                    try:
                        ipr.route("add", **fields)
                    except Exception as exc:
                        if getattr(exc, "code", None) != errno.EEXIST:
                            raise
                        # Someone else's route for exactly this prefix: not ours to overwrite.
                        log.warning(
                            "a route for this prefix exists and is not the agent's; leaving it",
                            extra=kv(interface=ifname, prefix=op.prefix),
                        )
                    continue
                try:
                    ipr.route("del", **fields)
                except Exception as exc:  # already gone: what we wanted
                    if getattr(exc, "code", None) != errno.ESRCH:
                        raise

    def connected(self, exclude: str) -> list[tuple[str, str]]:
        """(subnet, interface) of every address on this host, except on `exclude` (the tunnel)."""
        with netlink("listing addresses") as ipr:
            names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
            found: list[tuple[str, str]] = []
            for addr in ipr.get_addr():
                ifname = names.get(addr["index"])
                value = addr.get("address")
                if ifname is None or ifname == exclude or value is None:
                    continue
                net = ipaddress.ip_interface(f"{value}/{addr['prefixlen']}").network
                found.append((str(net), str(ifname)))
            return found

    def ensure_forwarding(self, ipv6: bool) -> int:
        """Write 1 to the forwarding sysctls that are not 1 yet (in this network namespace)."""
        changes = 0
        for family in ["ipv4", "ipv6"] if ipv6 else ["ipv4"]:
            path = _FORWARDING[family]
            try:
                if path.read_text().strip() != "1":
                    path.write_text("1\n")
                    log.info("forwarding enabled", extra=kv(family=family))
                    changes += 1
            except OSError as exc:
                raise BackendError(
                    f"cannot enable {family} forwarding: {exc.strerror}", code="sysctl"
                ) from exc
        return changes

    def send_through(self, ifname: str, addresses: Sequence[str]) -> list[str]:
        """One empty UDP datagram to each address's discard port, bound to `ifname`: it leaves through the
        tunnel or not at all (never by another route). Returns `address: error` for each that failed."""
        failed: list[str] = []
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
                    sock.sendto(b"", (address, DISCARD_PORT))
            except OSError as exc:
                failed.append(f"{address}: {exc.strerror or exc}")
        return failed

    def delete_link(self, ifname: str) -> bool:
        """Delete the tunnel link `ifname` if it exists (its addresses and routes go with it).

        Only a `tun` or `wireguard` link is deleted: a mistyped name must not take down eth0.
        """
        kind = link_kind(ifname)
        if kind is None:
            return False
        if kind not in ("tun", "wireguard"):
            raise BackendError(f"{ifname} is a {kind or 'plain'} link, not a tunnel; not deleting it")
        with netlink(f"deleting {ifname}") as ipr:
            ipr.link("del", ifname=ifname)
        log.info("interface deleted", extra=kv(interface=ifname))
        return True
