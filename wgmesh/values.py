"""Typed values of the pure core, parsed once where text enters: endpoints, node ids, the enumerations.

Pydantic meets these types only in `models.py` (the edge); everything behind it passes values, never the
strings they were parsed from, so no module splits `HOST:PORT` again.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal, NewType

from wgmesh.errors import ValidationError

NodeId = NewType("NodeId", int)
"""A node's registry id: what netmaps, routes, relay frames and probes name a node by."""

P2PPolicy = Literal["auto", "off"]
"""Whether a node or pair may talk directly (`auto`) or always goes through the relay (`off`)."""
RouteState = Literal["active", "standby", "conflict", "rejected", "pending"]
"""The verdict on an advertised subnet: `pending` (not approved yet, wgmesh.route_approval) and `rejected`
(by an admin, or unroutable) keep it out of every netmap; an approved one is active, standby or conflict."""
Decision = Literal["approved", "rejected"]
"""An admin's verdict on an advertised subnet (`wgmesh routes approve|reject`)."""
AliasSource = Literal["agent", "admin", "pool"]
"""Who gave a route its alias: the gateway's agent (`--advertise P=ALIAS`), an admin, the network's pool."""
PathKind = Literal["direct", "tcp-direct", "relay"]
"""How an agent reaches a peer: over UDP to one of its endpoints, over TCP straight to the peer's agent
when UDP between the two fails (agent/carrier.py), or through a relay."""
RefusalCode = Literal["coordinator", "relay", "next_hop", "peer_endpoint", "too_wide"]
"""Why an agent refused to route a prefix into the tunnel (agent/route_guard.py)."""
Liveness = Literal["up", "down", "unknown"]
"""A peer's health as one agent's probes see it (agent/health.py): answering, silent past the deadline, or
not known yet."""
FailoverCode = Literal["primary", "settling", "returning", "holder_down", "preempt", "isolated"]
"""Why an agent sends an HA prefix to the member it does (agent/ha.py)."""
Backend = Literal["auto", "kernel", "userspace"]
"""Which WireGuard the agent drives: the kernel module, wireguard-go, or the first that works."""

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network
"""An IP prefix: ipaddress's own networks, parsed strictly by `ipam.parse_cidr`."""

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_SHAPE = "must be HOST:PORT (IPv6 as [ADDRESS]:PORT)"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A UDP or TCP endpoint: an IP address (canonical spelling) or a hostname, and a port.

    Built directly or by `parse`; either way the host is canonical, so equal endpoints compare equal
    however they were written (`[2001:db8:0::1]:1` is `[2001:db8::1]:1`).
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValidationError(f"endpoint port {self.port} must be 0-65535", code="invalid_endpoint")
        try:
            canonical = str(ipaddress.ip_address(self.host))
        except ValueError:
            if not _HOSTNAME.fullmatch(self.host):
                raise ValidationError(
                    f"endpoint host {self.host!r} is neither an IP address nor a hostname",
                    code="invalid_endpoint",
                ) from None
            canonical = self.host.lower()
        object.__setattr__(self, "host", canonical)

    @classmethod
    def parse(cls, text: str, *, port_zero: bool = False) -> Endpoint:
        """`ADDRESS:PORT`, `[IPv6]:PORT` or `HOSTNAME:PORT`; ValidationError naming the text otherwise.

        Port 0 is refused unless `port_zero` (a listen address where 0 means "any free port").
        """
        host, sep, port = text.strip().rpartition(":")
        # isascii: str.isdigit also takes digits int() refuses (`²`), which would escape as a ValueError.
        if not sep or not host or not (port.isascii() and port.isdigit()):
            raise ValidationError(f"endpoint {text!r} {_SHAPE}", code="invalid_endpoint")
        lowest = 0 if port_zero else 1
        if not lowest <= int(port) <= 65535:
            raise ValidationError(f"endpoint {text!r}: port must be {lowest}-65535", code="invalid_endpoint")
        bracketed = host.startswith("[") and host.endswith("]")
        if bracketed:
            host = host[1:-1]
        ip = _ip(host)
        if bracketed and (ip is None or ip.version != 6):
            raise ValidationError(
                f"endpoint {text!r}: brackets are for IPv6 addresses", code="invalid_endpoint"
            )
        if not bracketed and ":" in host:
            raise ValidationError(
                f"endpoint {text!r}: write IPv6 endpoints as [ADDRESS]:PORT", code="invalid_endpoint"
            )
        try:
            return cls(host, int(port))
        except ValidationError as exc:
            raise ValidationError(f"endpoint {text!r} {_SHAPE}: {exc.message}", code=exc.code) from None

    @property
    def ip(self) -> IpAddress | None:
        """The host as an IP address; None for a hostname."""
        return _ip(self.host)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) pair sockets take."""
        return self.host, self.port

    def __str__(self) -> str:
        if ":" in self.host:  # only an IPv6 address holds a colon; the port's would be ambiguous
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def _ip(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
