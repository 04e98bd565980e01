"""wgmesh.ipam: overlay allocation, strict CIDR parsing and route classification (IPv4 and IPv6)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmesh import ipam
from wgmesh.errors import ExhaustedError, ValidationError
from wgmesh.ipam import RouteClaim, RouteVerdict
from wgmesh.values import IpAddress, Prefix

OVERLAY4 = ipaddress.ip_network("100.96.0.0/16")
OVERLAY6 = ipaddress.ip_network("fd7a:115c:a1e0::/48")


def net(text: str) -> Prefix:
    return ipaddress.ip_network(text)


def claim(prefix: str, gateway: str, site: str | None = None) -> RouteClaim:
    return RouteClaim(net(prefix), gateway, site)


def states(verdicts: list[RouteVerdict]) -> list[str]:
    return [v.state for v in verdicts]


# --- strict CIDR parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.0.0/16", "10.1.0.0/16"),
        (" 10.1.0.0/16\n", "10.1.0.0/16"),
        ("10.1.2.3/32", "10.1.2.3/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("fd00::/8", "fd00::/8"),
        ("FD00:1::/64", "fd00:1::/64"),
    ],
)
def test_parse_cidr_accepts_prefixes(text: str, expected: str) -> None:
    assert str(ipam.parse_cidr(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.1.0.5/16", "10.1.0.5/16 has host bits set; did you mean 10.1.0.0/16?"),
        ("192.168.1.1/24", "192.168.1.1/24 has host bits set; did you mean 192.168.1.0/24?"),
        ("fd00::1/64", "fd00::1/64 has host bits set; did you mean fd00::/64?"),
    ],
)
def test_parse_cidr_names_the_prefix_meant_when_host_bits_are_set(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        ipam.parse_cidr(text)
    assert info.value.message == message
    assert info.value.code == "invalid_cidr"


@pytest.mark.parametrize(
    "text", ["10.1.0.0", "fd00::", "10.1.0.0/33", "fd00::/129", "10.1.0/16", "x/8", "", "/8"]
)
def test_parse_cidr_refuses_non_prefixes(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        ipam.parse_cidr(text)
    assert info.value.code == "invalid_cidr"
    assert repr(text.strip()) in info.value.message


def test_host_prefix_is_32_or_128() -> None:
    assert str(ipam.host_prefix(ipaddress.ip_address("100.96.0.7"))) == "100.96.0.7/32"
    assert str(ipam.host_prefix(ipaddress.ip_address("fd00::7"))) == "fd00::7/128"


# --- allocation ---------------------------------------------------------------------------------------


def test_allocate_gives_the_lowest_free_host_address() -> None:
    assert str(ipam.allocate(OVERLAY4, [])) == "100.96.0.1"
    used = [ipaddress.ip_address("100.96.0.1"), ipaddress.ip_address("100.96.0.3")]
    assert str(ipam.allocate(OVERLAY4, used)) == "100.96.0.2"
    assert str(ipam.allocate(OVERLAY6, [])) == "fd7a:115c:a1e0::1"


def test_allocate_ignores_addresses_outside_the_network() -> None:
    used = [ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1")]
    assert str(ipam.allocate(net("10.0.0.0/30"), used)) == "10.0.0.2"


def test_allocate_never_hands_out_broadcast_and_exhaustion_says_so() -> None:
    small = net("10.9.0.0/30")
    first = ipam.allocate(small, [])
    second = ipam.allocate(small, [first])
    assert {str(first), str(second)} == {"10.9.0.1", "10.9.0.2"}
    with pytest.raises(ExhaustedError) as info:
        ipam.allocate(small, [first, second])
    assert info.value.code == "overlay_exhausted"
    assert info.value.message == "overlay network 10.9.0.0/30 has no free address left (2 in use)"


@pytest.mark.parametrize(("network", "only"), [("10.9.0.0/31", "10.9.0.1"), ("fd00::/127", "fd00::1")])
def test_allocate_never_hands_out_the_network_address_even_without_a_broadcast(
    network: str, only: str
) -> None:
    first = ipam.allocate(net(network), [])
    assert str(first) == only
    with pytest.raises(ExhaustedError):
        ipam.allocate(net(network), [first])


def test_allocate_exhausts_an_ipv6_network() -> None:
    small = net("fd00::/126")
    got: list[IpAddress] = []
    for _ in range(3):
        got.append(ipam.allocate(small, got))
    assert [str(a) for a in got] == ["fd00::1", "fd00::2", "fd00::3"]
    with pytest.raises(ExhaustedError, match="fd00::/126"):
        ipam.allocate(small, got)


@st.composite
def overlay_and_used(draw: st.DrawFn) -> tuple[Prefix, list[IpAddress]]:
    """A small overlay network (IPv4 /25-/30 in 10/8 or IPv6 /121-/126 in fd00::/8) and used addresses."""
    if draw(st.booleans()):
        length = draw(st.integers(25, 30))
        base = int(ipaddress.ip_address("10.0.0.0")) + draw(st.integers(0, 2**24 - 1))
        network: Prefix = ipaddress.ip_network(f"{ipaddress.IPv4Address(base)}/{length}", strict=False)
    else:
        length = draw(st.integers(121, 126))
        base6 = int(ipaddress.ip_address("fd00::")) + draw(st.integers(0, 2**120 - 1))
        network = ipaddress.ip_network(f"{ipaddress.IPv6Address(base6)}/{length}", strict=False)
    size = network.num_addresses
    offsets = draw(st.lists(st.integers(1, size - 2), max_size=min(size - 2, 40), unique=True))
    return network, [network.network_address + o for o in offsets]


@given(overlay_and_used())
def test_allocation_never_duplicates_and_never_leaves_the_network(
    case: tuple[Prefix, list[IpAddress]],
) -> None:
    network, used = case
    held = list(used)
    handed_out: list[IpAddress] = []
    while True:
        try:
            address = ipam.allocate(network, held)
        except ExhaustedError as exc:
            assert str(network) in exc.message
            break
        assert address in network
        assert address not in held
        assert address != network.network_address
        if network.version == 4:
            assert address != network.broadcast_address
        held.append(address)
        handed_out.append(address)
        assert len(handed_out) <= network.num_addresses  # terminates
    usable = network.num_addresses - (2 if network.version == 4 else 1)
    assert len(set(held)) == len(held) == usable


# --- a gateway's own subnet list ----------------------------------------------------------------------


def test_own_subnets_may_mix_families_and_disjoint_prefixes() -> None:
    ipam.check_own_subnets([net("10.1.0.0/16"), net("10.2.0.0/16"), net("fd00:1::/64")], OVERLAY4)


@pytest.mark.parametrize(
    ("subnets", "message"),
    [
        (["10.1.0.0/16", "10.1.0.0/16"], "10.1.0.0/16 is listed twice"),
        (["10.1.0.0/16", "10.1.2.0/24"], "10.1.2.0/24 overlaps 10.1.0.0/16 in the same advertisement"),
        (["100.96.4.0/24"], "100.96.4.0/24 overlaps the overlay network 100.96.0.0/16"),
        (["100.0.0.0/8"], "100.0.0.0/8 overlaps the overlay network 100.96.0.0/16"),
        (["127.0.0.0/8"], "127.0.0.0/8 overlaps the loopback range 127.0.0.0/8"),
        (["169.254.1.0/24"], "link-local"),
        (["224.0.0.0/24"], "multicast"),
        (["fe80::/64"], "link-local"),
        (["::1/128"], "loopback"),
    ],
)
def test_own_subnets_refused_with_the_reason(subnets: list[str], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        ipam.check_own_subnets([net(s) for s in subnets], OVERLAY4)
    assert message in info.value.message
    assert info.value.code == "invalid_route"


def test_unroutable_reason_in_ipv6_overlay() -> None:
    assert ipam.unroutable_reason(net("fd7a:115c:a1e0:5::/64"), OVERLAY6) is not None
    assert ipam.unroutable_reason(net("100.96.0.0/24"), OVERLAY6) is None
    assert ipam.unroutable_reason(net("fd00:1::/64"), OVERLAY6) is None


# --- route classification: examples ---------------------------------------------------------------------


def test_identical_prefix_from_gateways_of_one_site_is_an_ha_group() -> None:
    verdicts = ipam.classify_routes(
        OVERLAY4,
        [
            claim("10.1.0.0/16", "gw-a", "vpc1"),
            claim("10.1.0.0/16", "gw-b", "vpc1"),
            claim("10.1.0.0/16", "gw-c", "vpc1"),
        ],
    )
    assert states(verdicts) == ["active", "standby", "standby"]
    assert verdicts[0].other is None
    assert verdicts[1].other == verdicts[2].other == claim("10.1.0.0/16", "gw-a", "vpc1")
    assert verdicts[1].reason == "standby for 10.1.0.0/16@gw-a (site vpc1)"


def test_identical_prefix_from_another_site_is_a_conflict_naming_the_gateway_and_its_site() -> None:
    verdicts = ipam.classify_routes(
        OVERLAY4, [claim("10.2.0.0/24", "gw2", "vpc2"), claim("10.2.0.0/24", "gw3", "vpc3")]
    )
    assert states(verdicts) == ["active", "conflict"]
    assert verdicts[1].other == claim("10.2.0.0/24", "gw2", "vpc2")
    assert verdicts[1].reason == (
        "10.2.0.0/24 is already advertised by 10.2.0.0/24@gw2 of site vpc2, gw3 serves site vpc3: only "
        "gateways of one site form an HA group (wgmesh-agent --site); to reach both, publish this one "
        "under an alias: wgmesh routes alias 10.2.0.0/24 --node gw3 --as PREFIX (same length), or give "
        "the network an alias pool: wgmesh network set --alias-pool PREFIX"
    )


def test_gateways_without_a_site_are_each_a_site_of_their_own() -> None:
    verdicts = ipam.classify_routes(OVERLAY4, [claim("10.2.0.0/24", "gw2"), claim("10.2.0.0/24", "gw2b")])
    assert states(verdicts) == ["active", "conflict"]
    assert "of site gw2, gw2b serves site gw2b" in verdicts[1].reason
    # A site named after another gateway is that gateway's site.
    named = ipam.classify_routes(OVERLAY4, [claim("10.2.0.0/24", "gw2"), claim("10.2.0.0/24", "gw2b", "gw2")])
    assert states(named) == ["active", "standby"]


def test_a_claim_of_another_site_keeps_a_later_standby_out_until_it_goes() -> None:
    # Verdicts depend only on the set of earlier claims: vpc3's squatting claim (itself in conflict)
    # makes vpc2's second gateway a conflict too; once it is withdrawn, the HA group forms.
    claims = [
        claim("10.2.0.0/24", "gw2", "vpc2"),
        claim("10.2.0.0/24", "gw3", "vpc3"),
        claim("10.2.0.0/24", "gw2b", "vpc2"),
    ]
    assert states(ipam.classify_routes(OVERLAY4, claims)) == ["active", "conflict", "conflict"]
    assert states(ipam.classify_routes(OVERLAY4, [claims[0], claims[2]])) == ["active", "standby"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("10.1.0.0/16", "10.1.2.0/24"),  # later is inside
        ("10.1.2.0/24", "10.1.0.0/16"),  # later contains
        ("fd00:1::/32", "fd00:1:2::/64"),
    ],
)
def test_overlap_makes_the_later_route_a_conflict_naming_the_earlier(first: str, second: str) -> None:
    verdicts = ipam.classify_routes(OVERLAY4, [claim(first, "gw-a"), claim(second, "gw-b")])
    assert states(verdicts) == ["active", "conflict"]
    assert verdicts[1].other == claim(first, "gw-a")
    assert verdicts[1].reason.startswith(f"{second} overlaps {first}@gw-a; to reach both, publish ")


def test_overlay_overlap_is_rejected_and_blocks_nothing() -> None:
    verdicts = ipam.classify_routes(
        OVERLAY4,
        [claim("100.96.0.0/12", "gw-a"), claim("100.97.0.0/16", "gw-b"), claim("100.96.1.0/24", "gw-c")],
    )
    # 100.97.0.0/16 is outside 100.96.0.0/16 but inside the rejected /12: it must still be active.
    assert states(verdicts) == ["rejected", "active", "rejected"]
    assert "overlay network 100.96.0.0/16" in verdicts[0].reason
    assert verdicts[0].other is None


def test_a_conflicting_route_still_keeps_later_overlapping_routes_out() -> None:
    verdicts = ipam.classify_routes(
        OVERLAY4,
        [claim("10.1.0.0/16", "gw-a"), claim("10.0.0.0/8", "gw-b"), claim("10.2.0.0/16", "gw-c")],
    )
    assert states(verdicts) == ["active", "conflict", "conflict"]
    assert verdicts[2].other == claim("10.0.0.0/8", "gw-b")


def test_families_do_not_interact_and_the_same_gateway_cannot_claim_twice() -> None:
    verdicts = ipam.classify_routes(
        OVERLAY4,
        [claim("10.0.0.0/8", "gw-a"), claim("fd00::/8", "gw-a"), claim("10.0.0.0/8", "gw-a")],
    )
    assert states(verdicts) == ["active", "active", "rejected"]
    assert verdicts[2].reason == "10.0.0.0/8@gw-a is already advertised"


# --- route classification: properties ------------------------------------------------------------------

# Prefixes of length 8-12 inside 10.0.0.0/8 and fd00::/8 collide often: identical, nested and disjoint.
GATEWAYS = st.sampled_from(["gw-a", "gw-b", "gw-c", "gw-d"])
SITE_OF: dict[str, str | None] = {"gw-a": "vpc1", "gw-b": "vpc1", "gw-c": "vpc2", "gw-d": None}
"""Each gateway serves one site: two share one, one has its own, one names none (its own name)."""
OVERLAYS = st.sampled_from(
    [ipaddress.ip_network(n) for n in ("100.96.0.0/16", "10.240.0.0/12", "10.0.0.0/10", "fd00:ff00::/24")]
)


@st.composite
def small_prefix(draw: st.DrawFn) -> Prefix:
    length = draw(st.integers(8, 12))
    bits = draw(st.integers(0, 15))
    if draw(st.booleans()):
        base = int(ipaddress.ip_address("10.0.0.0")) | bits << 20
        return ipaddress.ip_network(f"{ipaddress.IPv4Address(base)}/{length}", strict=False)
    base6 = int(ipaddress.ip_address("fd00::")) | bits << 116
    return ipaddress.ip_network(f"{ipaddress.IPv6Address(base6)}/{length}", strict=False)


CLAIMS = st.lists(
    st.builds(lambda prefix, gw: RouteClaim(prefix, gw, SITE_OF[gw]), small_prefix(), GATEWAYS), max_size=12
)


def check_verdict_is_explained(verdict: RouteVerdict, earlier: list[RouteClaim]) -> None:
    """The claim a verdict names is an earlier one standing in the stated relation."""
    c = verdict.claim
    if verdict.state in ("active", "rejected"):
        assert verdict.other is None
        return
    assert verdict.other is not None
    assert verdict.other in earlier
    assert verdict.other.label in verdict.reason
    if verdict.state == "standby":
        assert verdict.other.prefix == c.prefix
        assert verdict.other.gateway != c.gateway
        assert verdict.other.site_name == c.site_name
    elif verdict.other.prefix == c.prefix:  # an identical prefix of another site
        assert verdict.other.site_name != c.site_name
        assert f"site {verdict.other.site_name}" in verdict.reason
    else:
        assert verdict.other.prefix.version == c.prefix.version
        assert verdict.other.prefix != c.prefix
        assert verdict.other.prefix.overlaps(c.prefix)


@given(overlay=OVERLAYS, claims=CLAIMS, data=st.data())
def test_a_verdict_depends_only_on_the_set_of_earlier_claims(
    overlay: Prefix, claims: list[RouteClaim], data: st.DataObject
) -> None:
    verdicts = ipam.classify_routes(overlay, claims)
    assert [v.claim for v in verdicts] == claims
    for i, claim_i in enumerate(claims):
        shuffled = data.draw(st.permutations(claims[:i]), label=f"earlier claims of #{i}, reordered")
        again = ipam.classify_routes(overlay, [*shuffled, claim_i])[-1]
        assert again.state == verdicts[i].state
        if again.state == "rejected":
            assert again.reason == verdicts[i].reason
        check_verdict_is_explained(verdicts[i], claims[:i])
        check_verdict_is_explained(again, claims[:i])


@given(overlay=OVERLAYS, claims=CLAIMS, later=CLAIMS)
def test_adding_a_later_claim_never_changes_an_earlier_verdict(
    overlay: Prefix, claims: list[RouteClaim], later: list[RouteClaim]
) -> None:
    before = ipam.classify_routes(overlay, claims)
    after = ipam.classify_routes(overlay, claims + later)
    assert after[: len(claims)] == before


@given(overlay=OVERLAYS, claims=CLAIMS.filter(bool), data=st.data())
def test_removing_a_claim_never_turns_an_active_one_inactive(
    overlay: Prefix, claims: list[RouteClaim], data: st.DataObject
) -> None:
    gone = data.draw(st.integers(0, len(claims) - 1), label="index removed")
    before = ipam.classify_routes(overlay, claims)
    after = ipam.classify_routes(overlay, claims[:gone] + claims[gone + 1 :])
    kept = before[:gone] + before[gone + 1 :]
    for old, new in zip(kept, after, strict=True):
        assert old.claim == new.claim
        if old.state == "active":
            assert new.state == "active"
        if old.state == "standby":  # an HA group member never becomes a conflict by another's going
            assert new.state in ("standby", "active")


@given(overlay=OVERLAYS, claims=CLAIMS)
def test_active_routes_never_overlap_and_each_standby_backs_an_active_one(
    overlay: Prefix, claims: list[RouteClaim]
) -> None:
    verdicts = ipam.classify_routes(overlay, claims)
    active = [v.claim for v in verdicts if v.state == "active"]
    for i, a in enumerate(active):
        assert ipam.unroutable_reason(a.prefix, overlay) is None
        for b in active[i + 1 :]:
            assert a.prefix.version != b.prefix.version or not a.prefix.overlaps(b.prefix), (a, b)
    for i, v in enumerate(verdicts):
        if v.state == "standby":
            assert v.other in active
            assert v.other is not None and v.other.site_name == v.claim.site_name
        if v.state == "rejected" and ipam.unroutable_reason(v.claim.prefix, overlay) is None:
            # Only an exact repeat of an earlier claim is rejected for a reason other than its prefix.
            assert v.claim in claims[:i]


def test_a_conflicting_route_keeps_later_overlapping_claims_out_even_identical_ones() -> None:
    # Documented trade-off: verdicts depend only on the set of earlier claims, so the squatting
    # /24 (itself in conflict) blocks a later standby; removing it turns gw-c into a standby.
    claims = [
        claim("10.1.0.0/16", "gw-a", "vpc1"),
        claim("10.1.2.0/24", "gw-b", "vpc1"),
        claim("10.1.0.0/16", "gw-c", "vpc1"),
    ]
    verdicts = ipam.classify_routes(OVERLAY4, claims)
    assert [v.state for v in verdicts] == ["active", "conflict", "conflict"]
    assert verdicts[2].other == claims[1]
    without = ipam.classify_routes(OVERLAY4, [claims[0], claims[2]])
    assert [v.state for v in without] == ["active", "standby"]


# --- the indexed classification agrees with the plain one it replaced -----------------------------------


def classify_by_scanning(overlay: Prefix, claims: list[RouteClaim]) -> list[RouteVerdict]:
    """classify_routes as it was written before issue 19: every claim against every earlier one."""
    verdicts: list[RouteVerdict] = []
    held: list[RouteClaim] = []
    for c in claims:
        reason = ipam.unroutable_reason(c.prefix, overlay)
        if reason:
            verdicts.append(RouteVerdict(c, "rejected", reason))
            continue
        if any((h.prefix, h.gateway) == (c.prefix, c.gateway) for h in held):
            verdicts.append(RouteVerdict(c, "rejected", f"{c.label} is already advertised"))
            continue
        overlapping = next(
            (
                h
                for h in held
                if h.prefix.version == c.prefix.version
                and h.prefix != c.prefix
                and h.prefix.overlaps(c.prefix)
            ),
            None,
        )
        identical = [h for h in held if h.prefix == c.prefix and h.gateway != c.gateway]
        other_site = next((h for h in identical if h.site_name != c.site_name), None)
        if overlapping is not None:
            hint = ipam._alias_hint(c)  # the wording is not what this compares
            verdicts.append(
                RouteVerdict(c, "conflict", f"{c.prefix} overlaps {overlapping.label}{hint}", overlapping)
            )
        elif other_site is not None:
            verdicts.append(RouteVerdict(c, "conflict", "(other site)", other_site))
        elif identical:
            verdicts.append(RouteVerdict(c, "standby", "(standby)", identical[0]))
        else:
            verdicts.append(RouteVerdict(c, "active", ""))
        held.append(c)
    return verdicts


# prefixes drawn from a small space, so that they nest, repeat and collide often; both families
_V4 = st.builds(
    lambda a, n: ipaddress.ip_interface((0x0A000000 | a << 8, n)).network,
    st.integers(0, 2**12 - 1),
    st.integers(8, 28),
)
_V6 = st.builds(
    lambda a, n: ipaddress.ip_interface((0xFD00 << 112 | a << 96, n)).network,
    st.integers(0, 2**8 - 1),
    st.integers(8, 112),
)
_CLAIMS = st.lists(
    st.tuples(
        st.one_of(_V4, _V6),
        st.sampled_from(["gw1", "gw2", "gw3", "gw4"]),
        st.sampled_from([None, "vpc1", "vpc2"]),
    ),
    max_size=40,
)


@given(_CLAIMS)
def test_the_indexed_classification_is_the_scanning_one(raw: list[tuple[Prefix, str, str | None]]) -> None:
    claims = [RouteClaim(p, gw, site) for p, gw, site in raw]
    got = ipam.classify_routes(OVERLAY4, claims)
    want = classify_by_scanning(OVERLAY4, claims)
    assert [(v.state, v.other) for v in got] == [(v.state, v.other) for v in want]
    assert [v.reason for v in got if v.state in ("active", "rejected")] + [
        v.reason for v in got if v.state == "conflict" and "overlaps" in v.reason
    ] == [v.reason for v in want if v.state in ("active", "rejected")] + [
        v.reason for v in want if v.state == "conflict" and "overlaps" in v.reason
    ]


# --- aliases: a VPC reached at another prefix of its length (1:1 translation at its gateway) ------------


def test_an_alias_lets_two_sites_of_one_cidr_both_be_routed() -> None:
    first = RouteClaim(net("10.1.0.0/24"), "gw1", "vpc1")
    aliased = RouteClaim(net("10.1.0.0/24"), "gw2", "vpc2", alias=net("10.201.0.0/24"))
    plain = RouteClaim(net("10.1.0.0/24"), "gw3", "vpc3")
    verdicts = ipam.classify_routes(OVERLAY4, [first, aliased, plain])
    assert states(verdicts) == ["active", "active", "conflict"]
    assert aliased.published == net("10.201.0.0/24") and aliased.label == "10.201.0.0/24@gw2"
    assert verdicts[2].other == first  # the one without an alias still collides


def test_an_alias_is_judged_as_the_prefix_it_publishes() -> None:
    held = RouteClaim(net("10.201.0.0/16"), "gw1", "vpc1")
    inside = RouteClaim(net("172.31.0.0/24"), "gw2", "vpc2", alias=net("10.201.7.0/24"))
    in_overlay = RouteClaim(net("172.31.0.0/16"), "gw3", "vpc3", alias=net("100.96.0.0/16"))
    verdicts = ipam.classify_routes(OVERLAY4, [held, inside, in_overlay])
    assert states(verdicts) == ["active", "conflict", "rejected"]
    assert verdicts[1].reason == "10.201.7.0/24 overlaps 10.201.0.0/16@gw1"
    assert "overlaps the overlay network" in verdicts[2].reason


def test_a_claim_is_rejected_when_its_prefix_or_its_alias_cannot_be_routed() -> None:
    in_overlay = RouteClaim(net("100.96.1.0/24"), "gw1", "vpc1", alias=net("10.201.0.0/24"))
    loopback_alias = RouteClaim(net("10.1.0.0/24"), "gw2", "vpc2", alias=net("127.0.0.0/24"))
    verdicts = ipam.classify_routes(OVERLAY4, [in_overlay, loopback_alias])
    assert states(verdicts) == ["rejected", "rejected"]
    assert "100.96.1.0/24 overlaps the overlay network" in verdicts[0].reason
    assert "127.0.0.0/24 overlaps the loopback" in verdicts[1].reason
    with pytest.raises(ValueError, match="of its family and length"):
        RouteClaim(net("10.1.0.0/24"), "gw3", alias=net("10.201.0.0/16"))


def test_gateways_of_one_site_publishing_one_alias_are_an_ha_group() -> None:
    a = RouteClaim(net("172.31.0.0/16"), "gw-a", "aws", alias=net("10.201.0.0/16"))
    b = RouteClaim(net("172.31.0.0/16"), "gw-b", "aws", alias=net("10.201.0.0/16"))
    verdicts = ipam.classify_routes(OVERLAY4, [a, b])
    assert states(verdicts) == ["active", "standby"]
    assert verdicts[1].reason == "standby for 10.201.0.0/16@gw-a (site aws)"


# An alias is made of the prefix's own length: drawn in the same small space, so that aliases collide
# with prefixes and with each other; some in the overlay (100.96.0.0/12 here), to be rejected.
_ALIASED = st.lists(
    st.tuples(
        st.one_of(_V4, _V6),
        st.one_of(
            st.none(),
            st.integers(0, 2**12 - 1).map(lambda a: 0x0A000000 | a << 8),
            st.integers(0, 2**8 - 1).map(lambda a: 0x64600000 | a << 12),
        ),
        st.sampled_from(["gw1", "gw2", "gw3", "gw4"]),
        st.sampled_from([None, "vpc1", "vpc2"]),
    ),
    max_size=30,
)


def _alias_of(prefix: Prefix, base: int | None) -> Prefix | None:
    if base is None or prefix.version != 4:
        return None
    return ipaddress.ip_interface((base, prefix.prefixlen)).network


@given(_ALIASED)
def test_a_claim_with_an_alias_is_classified_as_its_published_prefix(
    raw: list[tuple[Prefix, int | None, str, str | None]],
) -> None:
    claims = [RouteClaim(p, gw, site, alias=_alias_of(p, base)) for p, base, gw, site in raw]
    got = ipam.classify_routes(OVERLAY4, claims)
    published = ipam.classify_routes(OVERLAY4, [RouteClaim(c.published, c.gateway, c.site) for c in claims])
    assert [v.state for v in got] == [v.state for v in published]
    assert [v.other.label if v.other else None for v in got] == [
        v.other.label if v.other else None for v in published
    ]


def test_allocate_alias_takes_the_first_free_block_of_the_length() -> None:
    pool = net("10.200.0.0/13")
    assert ipam.allocate_alias(net("10.1.0.0/24"), pool, []) == net("10.200.0.0/24")
    taken = [net("10.200.0.0/23"), net("10.200.2.128/25"), net("10.200.4.0/24")]
    assert ipam.allocate_alias(net("10.1.0.0/24"), pool, taken) == net("10.200.3.0/24")
    assert ipam.allocate_alias(net("172.31.0.0/16"), pool, taken) == net("10.201.0.0/16")
    # a prefix covering the pool's start, or an unrelated family, is skipped or ignored
    assert ipam.allocate_alias(net("10.1.0.0/16"), pool, [net("10.0.0.0/8")]) is None
    assert ipam.allocate_alias(net("10.1.0.0/16"), pool, [net("fd00::/8")]) == net("10.200.0.0/16")


def test_allocate_alias_refuses_what_the_pool_cannot_hold() -> None:
    pool = net("10.200.0.0/30")
    assert ipam.allocate_alias(net("10.1.0.0/24"), pool, []) is None  # longer than the pool
    assert ipam.allocate_alias(net("fd00::/64"), pool, []) is None  # another family
    full = [net("10.200.0.0/31"), net("10.200.0.2/32"), net("10.200.0.3/32")]
    assert ipam.allocate_alias(net("10.1.0.0/32"), pool, full) is None
    assert ipam.allocate_alias(net("10.1.0.0/32"), pool, full[:2]) == net("10.200.0.3/32")
    # the last blocks of each address space
    top = net("255.255.255.0/24")
    assert ipam.allocate_alias(net("10.1.0.0/25"), top, [net("255.255.255.0/25")]) == net(
        "255.255.255.128/25"
    )
    assert (
        ipam.allocate_alias(net("10.1.0.0/25"), top, [net("255.255.255.128/25"), net("255.255.255.0/25")])
        is None
    )
    top6 = net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120")
    low6 = net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/121")
    assert ipam.allocate_alias(net("fd00::/121"), top6, [low6]) == net(
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff80/121"
    )
    six = net("fd00:200::/120")
    assert ipam.allocate_alias(net("fd00:1::/124"), six, [net("fd00:200::/125")]) == net("fd00:200::10/124")


@given(
    st.integers(24, 30),
    st.lists(
        st.builds(
            lambda a, n: ipaddress.ip_interface((0x0AC80000 | a, n)).network,
            st.integers(0, 255),
            st.integers(22, 32),
        ),
        max_size=12,
    ),
)
def test_allocate_alias_finds_a_free_block_whenever_one_exists(length: int, taken: list[Prefix]) -> None:
    pool = net("10.200.0.0/24")
    prefix = ipaddress.ip_interface(("10.1.0.0", length)).network
    got = ipam.allocate_alias(prefix, pool, taken)
    free = [b for b in pool.subnets(new_prefix=length) if not any(b.overlaps(t) for t in taken)]
    assert got == (free[0] if free else None)
