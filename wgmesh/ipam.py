"""Pure address management: overlay allocation, strict CIDR parsing and route classification.

Every "no" comes with a reason a person can act on; the same words reach the API, CLI and dashboard.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from wgmesh.errors import ExhaustedError, ValidationError
from wgmesh.values import IpAddress, Prefix, RouteState

# Prefixes that can never be routed through a tunnel to a VPC.
_UNROUTABLE: tuple[tuple[Prefix, str], ...] = (
    (ipaddress.ip_network("127.0.0.0/8"), "loopback"),
    (ipaddress.ip_network("169.254.0.0/16"), "link-local"),
    (ipaddress.ip_network("224.0.0.0/4"), "multicast"),
    (ipaddress.ip_network("::1/128"), "loopback"),
    (ipaddress.ip_network("fe80::/10"), "link-local"),
    (ipaddress.ip_network("ff00::/8"), "multicast"),
)


def parse_cidr(text: str) -> Prefix:
    """Parse a network prefix strictly: host bits set is an error that names the right prefix."""
    text = text.strip()
    if "/" not in text:
        raise ValidationError(f"{text!r} is not a CIDR prefix (expected ADDRESS/LENGTH)", code="invalid_cidr")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValidationError(f"{text!r} is not a valid CIDR prefix", code="invalid_cidr") from exc
        raise ValidationError(
            f"{text} has host bits set; did you mean {loose}?", code="invalid_cidr"
        ) from exc


def host_prefix(address: IpAddress) -> Prefix:
    """The /32 or /128 holding exactly one address."""
    return ipaddress.ip_network(f"{address}/{address.max_prefixlen}")


def allocate(network: Prefix, used: Collection[IpAddress]) -> IpAddress:
    """The lowest free host address of the overlay network.

    Never the network address, never the IPv4 broadcast address, never an address in `used`.
    """
    taken = {a for a in used if a in network}
    for candidate in network.hosts():
        if candidate not in taken and candidate != network.network_address:
            return candidate
    raise ExhaustedError(
        f"overlay network {network} has no free address left ({len(taken)} in use)",
        code="overlay_exhausted",
    )


def check_own_subnets(prefixes: Sequence[Prefix], overlay: Prefix) -> None:
    """Refuse a subnet list one gateway may not advertise: duplicates, self-overlap, overlay, unroutable."""
    for i, prefix in enumerate(prefixes):
        reason = unroutable_reason(prefix, overlay)
        if reason:
            raise ValidationError(reason, code="invalid_route")
        for other in prefixes[:i]:
            if other == prefix:
                raise ValidationError(f"{prefix} is listed twice", code="invalid_route")
            if other.version == prefix.version and other.overlaps(prefix):
                raise ValidationError(
                    f"{prefix} overlaps {other} in the same advertisement", code="invalid_route"
                )


def unroutable_reason(prefix: Prefix, overlay: Prefix) -> str | None:
    """Why `prefix` can never be a subnet route, or None when it can."""
    if prefix.version == overlay.version and prefix.overlaps(overlay):
        return f"{prefix} overlaps the overlay network {overlay}"
    for special, what in _UNROUTABLE:
        if prefix.version == special.version and prefix.overlaps(special):
            return f"{prefix} overlaps the {what} range {special}"
    return None


def endpoint_refusal(address: IpAddress, overlay: Prefix) -> str | None:
    """Why a node may not report `address` as where peers reach it, or None when it may.

    Loopback, unspecified, link-local and multicast addresses would make peers send to themselves or to
    their own link; an overlay address would loop WireGuard into its own tunnel.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1 on the wire
    for what, found in (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
    ):
        if found:
            return f"{address} is a {what} address"
    if address in overlay:
        return f"{address} is inside the overlay network {overlay}"
    return None


def alias_refusal(prefix: Prefix, alias: Prefix) -> str | None:
    """Why `alias` cannot stand for `prefix` (1:1 translation keeps the host part), or None."""
    if (alias.version, alias.prefixlen) != (prefix.version, prefix.prefixlen):
        return f"the alias of {prefix} must be of its family and length, not {alias}"
    return None


def check_alias(prefix: Prefix, alias: Prefix) -> None:
    """`alias_refusal` as the ValidationError (422 `invalid_alias`) the API and the agent's flags give."""
    reason = alias_refusal(prefix, alias)
    if reason:
        raise ValidationError(reason, code="invalid_alias")


def check_alias_pool(pool: Prefix, overlay: Prefix) -> None:
    """Refuse a pool no alias could come from: one that overlaps the overlay or unroutable space."""
    reason = unroutable_reason(pool, overlay)
    if reason:
        raise ValidationError(f"alias pool: {reason}", code="invalid_alias_pool")


def allocate_alias(prefix: Prefix, pool: Prefix, taken: Iterable[Prefix]) -> Prefix | None:
    """The first block of `prefix`'s length inside `pool` that overlaps none of `taken`, or None.

    `taken` is everything an alias must not collide with: the prefixes the mesh routes (published ones)
    and the VPCs' own (a host inside one would take the alias for its own network). The blocks are
    walked by the gaps between the taken ranges, not one by one: a /13 pool holds 2^19 /32s.
    """
    if prefix.version != pool.version or prefix.prefixlen < pool.prefixlen:
        return None
    size = 1 << (prefix.max_prefixlen - prefix.prefixlen)
    first = int(pool.network_address)
    end = first + pool.num_addresses
    spans = sorted(
        (int(t.network_address), int(t.network_address) + t.num_addresses)
        for t in taken
        if t.version == pool.version
    )
    candidate = first
    for low, high in spans:
        if high <= candidate:
            continue
        if low >= candidate + size:
            break  # sorted by start: nothing later reaches back into the candidate
        candidate = -(-high // size) * size  # the next block boundary at or after this range's end
        if candidate + size > end:
            return None
    if candidate + size > end:
        return None
    return type(pool)((candidate, prefix.prefixlen))


@dataclass(frozen=True, slots=True)
class RouteClaim:
    """A gateway's claim on a prefix; claims are classified in the order they were made.

    `site` is the site (VPC) the gateway serves; None: a site of its own, named after the gateway."""

    prefix: Prefix
    gateway: str
    site: str | None = None
    alias: Prefix | None = None
    """Where the other sites reach `prefix` (1:1 prefix translation at the gateway); None: at itself."""

    def __post_init__(self) -> None:
        if self.alias is not None:
            reason = alias_refusal(self.prefix, self.alias)
            if reason:
                raise ValueError(reason)

    @property
    def published(self) -> Prefix:
        """The prefix the other sites route: its alias, else the prefix itself."""
        return self.alias if self.alias is not None else self.prefix

    @property
    def label(self) -> str:
        return f"{self.published}@{self.gateway}"

    @property
    def site_name(self) -> str:
        """The gateway's site, its own name when it names none."""
        return self.site if self.site is not None else self.gateway


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    """The state of one claim, why, and the claim it collides with or stands by for."""

    claim: RouteClaim
    state: RouteState
    reason: str
    other: RouteClaim | None = None


def classify_routes(overlay: Prefix, claims: Iterable[RouteClaim]) -> list[RouteVerdict]:
    """Classify claims given oldest first.

    A claim's verdict depends only on the set of claims made before it, never on their order:
    adding a claim never changes an earlier verdict, and removing one never deactivates another.
    Rejected claims (overlay, unroutable) take no part; every other earlier claim, even one in
    conflict, keeps later overlapping claims out, so that deleting a route cannot flip others.

    An identical prefix is a standby (an HA group) when every earlier gateway holding it serves the
    same site, and a conflict as soon as one of them serves another site: removing a claim can then
    only move another from conflict towards standby or active, never back.
    """
    verdicts: list[RouteVerdict] = []
    held = _Held()
    for claim in claims:
        reason = unroutable_reason(claim.prefix, overlay) or (
            unroutable_reason(claim.alias, overlay) if claim.alias is not None else None
        )
        if reason:
            verdicts.append(RouteVerdict(claim, "rejected", reason))
            continue
        if (claim.published, claim.gateway) in held.keys:
            verdicts.append(RouteVerdict(claim, "rejected", f"{claim.label} is already advertised"))
            continue
        # What the other sites route is the published prefix: two VPCs of one CIDR stop colliding once
        # one of them has an alias (the one without still cannot reach the other's real prefix: it is
        # its own, and that is for its gateway to leave out).
        published = claim.published
        overlapping = held.first_overlapping(published)
        identical = [c for c in held.by_prefix.get(published, ()) if c.gateway != claim.gateway]
        other_site = next((c for c in identical if c.site_name != claim.site_name), None)
        if overlapping is not None:
            reason = f"{published} overlaps {overlapping.label}"
            verdicts.append(RouteVerdict(claim, "conflict", reason + _alias_hint(claim), overlapping))
        elif other_site is not None:
            verdicts.append(
                RouteVerdict(
                    claim,
                    "conflict",
                    f"{published} is already advertised by {other_site.label} of site "
                    f"{other_site.site_name}, {claim.gateway} serves site {claim.site_name}: only "
                    "gateways of one site form an HA group (wgmesh-agent --site)" + _alias_hint(claim),
                    other_site,
                )
            )
        elif identical:
            verdicts.append(
                RouteVerdict(
                    claim,
                    "standby",
                    f"standby for {identical[0].label} (site {claim.site_name})",
                    identical[0],
                )
            )
        else:
            verdicts.append(RouteVerdict(claim, "active", ""))
        held.add(claim)
    return verdicts


def _alias_hint(claim: RouteClaim) -> str:
    """How a conflict is resolved when two VPCs overlap: publish this one under an alias."""
    if claim.alias is not None:
        return ""  # its alias is what collides: another alias, not a hint, is the way out
    return (
        f"; to reach both, publish this one under an alias: wgmesh routes alias {claim.prefix} "
        f"--node {claim.gateway} --as PREFIX (same length), or give the network an alias pool: "
        "wgmesh network set --alias-pool PREFIX"
    )


class _Held:
    """The claims held so far, indexed so that each new claim is judged in O(log n + its overlaps)
    instead of against every earlier claim (1,000 routes were 500,000 `overlaps` calls, 2 s, per change).

    Two prefixes of one family overlap iff one contains the other: the held prefixes containing P are
    among P's supernets (one dict lookup per shorter length), those inside P lie in P's address range
    (a range of the list of held prefixes sorted by network address). The earliest held one wins, as
    when scanning the claims in order."""

    def __init__(self) -> None:
        self.keys: set[tuple[Prefix, str]] = set()
        self.by_prefix: dict[Prefix, list[RouteClaim]] = {}
        # (version, network as int, length) -> (order of its first claim, that claim)
        self._first: dict[tuple[int, int, int], tuple[int, RouteClaim]] = {}
        # per version, sorted (network as int, length, order): every held prefix once
        self._sorted: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}

    def add(self, claim: RouteClaim) -> None:
        p = claim.published
        self.keys.add((p, claim.gateway))
        self.by_prefix.setdefault(p, []).append(claim)
        key = (p.version, int(p.network_address), p.prefixlen)
        if key not in self._first:
            order = len(self._first)
            self._first[key] = (order, claim)
            bisect.insort(self._sorted[p.version], (key[1], key[2], order))

    def first_overlapping(self, prefix: Prefix) -> RouteClaim | None:
        """The earliest held claim of another prefix of the same family that overlaps `prefix`."""
        version, net, length = prefix.version, int(prefix.network_address), prefix.prefixlen
        bits = prefix.max_prefixlen
        found: list[tuple[int, RouteClaim]] = []
        for shorter in range(length):
            mask = ((1 << shorter) - 1) << (bits - shorter)
            if (hit := self._first.get((version, net & mask, shorter))) is not None:
                found.append(hit)
        ordered = self._sorted[version]
        last = net | ((1 << (bits - length)) - 1)
        for i in range(bisect.bisect_left(ordered, (net, length + 1, -1)), len(ordered)):
            start, sub_length, _ = ordered[i]
            if start > last:
                break
            if sub_length > length:
                found.append(self._first[(version, start, sub_length)])
        return min(found, key=lambda hit: hit[0])[1] if found else None
