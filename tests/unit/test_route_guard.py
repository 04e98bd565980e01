"""wgmesh.agent.route_guard: the prefixes an agent refuses to route, whatever its netmap says (issue 16)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from wgmesh.agent.route_guard import (
    DEFAULT_BOUND,
    MIN_PREFIX_V4,
    MIN_PREFIX_V6,
    Protected,
    Refusal,
    WidthBound,
    judge,
    verdict,
)
from wgmesh.models import RefusedRoute

ip = ipaddress.ip_address
net = ipaddress.ip_network

PROTECTED = Protected(
    coordinator=(ip("198.18.0.1"), ip("2001:db8:c::1")),
    relays=(ip("203.0.113.7"), ip("2001:db8:7::7")),
    next_hops=(ip("198.18.1.254"), ip("fe80::1")),
)
PEERS = (ip("192.0.2.20"), ip("2001:db8:20::20"))


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("198.18.0.1/32", Refusal("coordinator", ip("198.18.0.1"))),
        ("198.18.0.0/16", Refusal("coordinator", ip("198.18.0.1"))),
        ("2001:db8:c::/48", Refusal("coordinator", ip("2001:db8:c::1"))),
        ("203.0.113.0/24", Refusal("relay", ip("203.0.113.7"))),
        ("2001:db8:7::7/128", Refusal("relay", ip("2001:db8:7::7"))),
        ("198.18.1.0/24", Refusal("next_hop", ip("198.18.1.254"))),
        ("fe80::/64", Refusal("next_hop", ip("fe80::1"))),
        ("192.0.2.0/24", Refusal("peer_endpoint", ip("192.0.2.20"))),
        ("2001:db8:20::/64", Refusal("peer_endpoint", ip("2001:db8:20::20"))),
        ("0.0.0.0/0", Refusal("coordinator", ip("198.18.0.1"))),
        ("::/0", Refusal("coordinator", ip("2001:db8:c::1"))),
        ("64.0.0.0/3", Refusal("too_wide")),
        ("2000::/3", Refusal("coordinator", ip("2001:db8:c::1"))),
        ("fc00::/7", Refusal("too_wide")),
        ("10.0.0.0/8", None),
        ("10.2.0.0/24", None),
        ("100.96.0.2/32", None),
        ("fd00:1:2::/48", None),
        ("2a00::/16", None),
    ],
)
def test_each_reason_in_both_families(prefix: str, expected: Refusal | None) -> None:
    assert verdict(net(prefix), PROTECTED, PEERS) == expected


def test_an_address_of_the_other_family_never_matches() -> None:
    only_v4 = Protected(coordinator=(ip("198.18.0.1"),))
    assert verdict(net("::/0"), only_v4, bound=WidthBound(allow_wide=True)) is None
    assert verdict(net("::ffff:0:0/96"), only_v4) is None  # a mapped range is another family's prefix


def test_default_bounds_are_documented_values() -> None:
    assert (MIN_PREFIX_V4, MIN_PREFIX_V6) == (8, 16)
    assert WidthBound(MIN_PREFIX_V4, MIN_PREFIX_V6, allow_wide=False) == DEFAULT_BOUND
    nothing = Protected()
    assert verdict(net("10.0.0.0/8"), nothing) is None
    assert verdict(net("8.0.0.0/7"), nothing) == Refusal("too_wide")
    assert verdict(net("2001::/16"), nothing) is None
    assert verdict(net("2000::/15"), nothing) == Refusal("too_wide")
    assert verdict(net("0.0.0.0/0"), nothing) == Refusal("too_wide")
    assert verdict(net("::/0"), nothing) == Refusal("too_wide")


def test_the_flag_lifts_the_width_bound_but_never_a_protected_address() -> None:
    wide = WidthBound(allow_wide=True)
    assert verdict(net("0.0.0.0/0"), Protected(), bound=wide) is None
    assert verdict(net("64.0.0.0/3"), PROTECTED, PEERS, wide) is None
    assert verdict(net("fc00::/7"), PROTECTED, PEERS, wide) is None
    # a default route still covers the coordinator: no flag lets the tunnel swallow the control plane
    assert verdict(net("0.0.0.0/0"), PROTECTED, PEERS, wide) == Refusal("coordinator", ip("198.18.0.1"))


def test_a_configured_bound_per_family() -> None:
    strict = WidthBound(min_prefix_v4=16, min_prefix_v6=32)
    assert verdict(net("10.0.0.0/8"), Protected(), bound=strict) == Refusal("too_wide")
    assert verdict(net("10.1.0.0/16"), Protected(), bound=strict) is None
    assert verdict(net("fd00::/16"), Protected(), bound=strict) == Refusal("too_wide")
    assert verdict(net("2001:db8::/32"), Protected(), bound=strict) is None
    loose = WidthBound(min_prefix_v4=1, min_prefix_v6=1)
    assert verdict(net("0.0.0.0/1"), Protected(), bound=loose) is None
    assert verdict(net("0.0.0.0/0"), Protected(), bound=loose) == Refusal("too_wide")


def test_judge_names_owner_code_and_address_and_keeps_the_rest() -> None:
    owners: dict[str, str | None] = {
        "10.2.0.0/24": "gw2",
        "198.18.0.1/32": "gw3",
        "0.0.0.0/1": "gw3",
        "100.96.0.3/32": "gw3",
    }
    refused = judge(owners, PROTECTED, PEERS)
    assert refused == [
        RefusedRoute(prefix="0.0.0.0/1", gateway="gw3", code="too_wide", address=None),
        RefusedRoute(prefix="198.18.0.1/32", gateway="gw3", code="coordinator", address="198.18.0.1"),
    ]
    assert refused[1].reason == "covers the coordinator's address 198.18.0.1"
    assert "--allow-wide-routes" in refused[0].reason
    assert judge({"10.2.0.0/24": "gw2"}, PROTECTED, PEERS) == []


def test_judge_with_many_endpoints_agrees_with_verdict_one_prefix_at_a_time() -> None:
    # judge finds the endpoints inside each prefix by bisection; the answer must be verdict's own, which
    # tries every endpoint in the order given (the first one inside is the one reported).
    rng = random.Random(19)
    endpoints = [ip(f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}") for _ in range(300)]
    endpoints += [ip(f"2001:db8:{rng.randrange(4):x}::{rng.randrange(1 << 16):x}") for _ in range(50)]
    endpoints += [ip("10.1.0.0"), ip("10.1.0.255"), ip("10.2.0.0")]  # a prefix's first and last address
    owners: dict[str, str | None] = {f"10.{a}.{b}.0/24": f"gw{a}" for a in range(5) for b in range(0, 256, 7)}
    owners |= {"10.1.0.0/24": "gw1", "10.0.0.0/14": "gw9", "2001:db8:1::/48": "gw6", "10.200.0.0/16": None}
    owners |= {f"{e}/{e.max_prefixlen}": "host" for e in endpoints[:20]}
    reference = []
    for text in sorted(owners):
        found = verdict(net(text), Protected(), endpoints)
        if found is not None:
            address = str(found.address) if found.address is not None else None
            reference.append(
                RefusedRoute(prefix=text, gateway=owners[text], code=found.code, address=address)
            )
    refused = judge(owners, Protected(), endpoints)
    assert refused == reference
    assert any(r.address == "10.1.0.0" for r in refused if str(r.prefix) == "10.1.0.0/24")
    assert len(refused) > 20  # the data does exercise the index, not only the empty case
