"""The tunnel MTU and the TCP MSS that fits it: pure arithmetic, documented once, used by the agent
(what to set and clamp) and the coordinator (what each node's netmap says).

A WireGuard packet costs its outer IP header (20 bytes for IPv4, 40 for IPv6), UDP (8) and WireGuard's
own 32 (type, receiver, counter, authentication tag): 60 bytes over IPv4, 80 over IPv6. The tunnel's
MTU must leave that room on the underlay link, or every full-sized packet is fragmented (or dropped
where the cloud drops fragments). A TCP segment inside costs 40 bytes of IPv4+TCP headers (60 for
IPv6), so the largest MSS that fits a tunnel of MTU m is m - 40 (m - 60).
"""

from __future__ import annotations

from wgmesh.models import DEFAULT_MTU, MIN_MTU

__all__ = ["DEFAULT_MTU", "MIN_MTU", "mss", "path_mtu", "tunnel_mtu", "underlay_limit"]

OVERHEAD_IPV4 = 60
OVERHEAD_IPV6 = 80
# DEFAULT_MTU (1420: a 1500-byte underlay minus the larger, IPv6, overhead) and MIN_MTU (1280, IPv6's
# minimum link MTU, below which the tunnel never goes even on an underlay too small for it: the outer
# packets are then fragmented by the underlay rather than IPv6 refused in the tunnel) come with the models.

TCP_IPV4_HEADERS = 40
TCP_IPV6_HEADERS = 60


def underlay_limit(underlay_mtu: int, ipv6_underlay: bool) -> int:
    """The largest tunnel MTU an underlay link of `underlay_mtu` carries without fragmenting."""
    return underlay_mtu - (OVERHEAD_IPV6 if ipv6_underlay else OVERHEAD_IPV4)


def tunnel_mtu(ceiling: int, limit: int | None) -> int:
    """The MTU to set: the netmap's ceiling, lowered to the underlay's `limit` (None: unknown), ≥ MIN_MTU."""
    chosen = ceiling if limit is None else min(ceiling, limit)
    return max(MIN_MTU, chosen)


PADDING = 16
"""WireGuard pads every packet's content to a multiple of 16 bytes, but never past the sending
interface's MTU (a packet as large as the MTU is sent unpadded)."""


def path_mtu(own: int, peer: int) -> int:
    """The largest inner packet the tunnel between two gateways carries whichever end sends it.

    The smaller of the two ends' MTUs, except that the larger end pads a packet of that size by up to
    15 bytes (its own MTU does not stop it), which the smaller end's underlay then drops without a
    word; so between unequal ends the size is rounded down to a multiple of the padding.
    """
    smaller = min(own, peer)
    if own == peer:
        return smaller
    return smaller - smaller % PADDING


def mss(mtu: int, ipv6: bool) -> int:
    """The largest TCP MSS whose segments fit a tunnel of `mtu`."""
    return mtu - (TCP_IPV6_HEADERS if ipv6 else TCP_IPV4_HEADERS)
