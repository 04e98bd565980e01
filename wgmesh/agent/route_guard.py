"""Pure: which remote prefixes the agent refuses to route into the tunnel, whatever its netmap says.

The coordinator decides which prefixes a netmap carries; this module is the agent's own last word, so a
coordinator that went wrong (or a node it trusted too much) cannot make the tunnel swallow the traffic the
tunnel itself rides on. A prefix is refused when it covers an address the agent must keep reaching over
the underlay (the coordinator, a relay, its next hop, a peer it reaches directly: each would loop the
tunnel into itself or cut the agent off from its control plane), or when it is wider than a bound.

The agent calls `judge` on every apply with fresh inputs; the data plane leaves refused prefixes out of
both the routes and WireGuard's allowed IPs (docs/architecture.md, docs/security.md).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wgmesh.agent.wgstate import network, span
from wgmesh.models import RefusedRoute
from wgmesh.values import IpAddress, Prefix, RefusalCode

MIN_PREFIX_V4 = 8
"""IPv4 prefixes shorter than /8 are refused by default: 10.0.0.0/8, the largest private block, still
passes; 0.0.0.0/1 or 64.0.0.0/3 (a slice of the internet) do not."""
MIN_PREFIX_V6 = 16
"""IPv6 prefixes shorter than /16 are refused by default. No single organisation holds more than about a
/19 (RIR allocations to LIRs are /19 to /32, a site is a /48, a ULA network a /48), so a /16 already
aggregates far more than any mesh routes; 2000::/3, fc00::/7 and ::/1 are refused."""


@dataclass(frozen=True, slots=True)
class WidthBound:
    """How wide a routed prefix may be; `allow_wide` (`--allow-wide-routes`) lifts the bound, including for
    a default route, but never the protected addresses."""

    min_prefix_v4: int = MIN_PREFIX_V4
    min_prefix_v6: int = MIN_PREFIX_V6
    allow_wide: bool = False

    def too_wide(self, prefix: Prefix) -> bool:
        """Whether `prefix` is shorter than the bound of its family (and wide routes are not allowed)."""
        bound = self.min_prefix_v4 if prefix.version == 4 else self.min_prefix_v6
        return not self.allow_wide and prefix.prefixlen < bound


DEFAULT_BOUND = WidthBound()


@dataclass(frozen=True, slots=True)
class Protected:
    """Underlay addresses the tunnel must never carry, resolved by the agent (agent/system/underlay.py)."""

    coordinator: tuple[IpAddress, ...] = ()
    """The coordinator URL's host, every address it resolves to."""
    relays: tuple[IpAddress, ...] = ()
    """Every relay of the relay grant, resolved."""
    next_hops: tuple[IpAddress, ...] = ()
    """The gateways of the default routes and of the route to the coordinator."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """The verdict on one refused prefix: the reason code and the protected address it covers, if any."""

    code: RefusalCode
    address: IpAddress | None = None


def verdict(
    prefix: Prefix,
    protected: Protected,
    peer_endpoints: Iterable[IpAddress] = (),
    bound: WidthBound = DEFAULT_BOUND,
) -> Refusal | None:
    """None: install `prefix`; else why it is refused.

    Protected addresses come first, in the order of the `RefusalCode`s: a default route names the
    coordinator it would cut off, which `--allow-wide-routes` cannot lift.
    """
    groups: tuple[tuple[RefusalCode, Iterable[IpAddress]], ...] = (
        ("coordinator", protected.coordinator),
        ("relay", protected.relays),
        ("next_hop", protected.next_hops),
        ("peer_endpoint", peer_endpoints),
    )
    for code, addresses in groups:
        for address in addresses:
            if address.version == prefix.version and address in prefix:
                return Refusal(code, address)
    if bound.too_wide(prefix):
        return Refusal("too_wide")
    return None


def judge(
    owners: Mapping[str, str | None],
    protected: Protected,
    peer_endpoints: Iterable[IpAddress] = (),
    bound: WidthBound = DEFAULT_BOUND,
) -> list[RefusedRoute]:
    """The refused ones among `owners` (prefix -> the gateway that owns it), sorted by prefix text."""
    peers = _EndpointIndex(peer_endpoints)
    guarded = (*protected.coordinator, *protected.relays, *protected.next_hops)
    refused: list[RefusedRoute] = []
    for text in sorted(owners):
        # Only the endpoints inside the prefix can be the reason: with 1,000 peers, every route
        # against every endpoint was two million comparisons per apply; and most prefixes cover no
        # endpoint and are narrow, which two bisections and the width tell without verdict.
        version, first, last = span(text)
        inside = peers.within(version, first, last)
        prefix = network(text)
        if (
            not inside
            and not bound.too_wide(prefix)
            and not any(a.version == version and a in prefix for a in guarded)
        ):
            continue
        found = verdict(prefix, protected, inside, bound)
        if found is not None:
            refused.append(
                RefusedRoute(
                    prefix=prefix,
                    gateway=owners[text],
                    code=found.code,
                    address=str(found.address) if found.address is not None else None,
                )
            )
    return refused


class _EndpointIndex:
    """Addresses sorted by value per family, to find those inside a prefix by bisection."""

    def __init__(self, addresses: Iterable[IpAddress]) -> None:
        self._by_version: dict[int, tuple[list[int], list[tuple[int, IpAddress]]]] = {}
        ranked: dict[int, list[tuple[int, int, IpAddress]]] = {}
        for order, address in enumerate(addresses):
            ranked.setdefault(address.version, []).append((int(address), order, address))
        for version, items in ranked.items():
            items.sort(key=lambda item: item[0])
            self._by_version[version] = ([v for v, _, _ in items], [(o, a) for _, o, a in items])

    def within(self, version: int, first: int, last: int) -> list[IpAddress]:
        """The addresses of this IP version from `first` to `last`, in the order they were given (the first
        is the one reported)."""
        found = self._by_version.get(version)
        if found is None:
            return []
        values, entries = found
        low = bisect.bisect_left(values, first)
        high = bisect.bisect_right(values, last)
        if low == high:
            return []
        return [address for _, address in sorted(entries[low:high], key=lambda entry: entry[0])]
