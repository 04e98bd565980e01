"""`wgmesh pair set A B --p2p auto|off|clear` and `wgmesh pair list`, checked in the netmaps."""

from __future__ import annotations

import httpx
import pytest
from cli_harness import Cli
from coordinator_harness import Coordinator, Enrolled, create_token, enroll, netmap, peers_by_name


@pytest.fixture(scope="module")
def pair(coordinator: Coordinator, admin: httpx.Client) -> tuple[Enrolled, Enrolled]:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.anonymous() as anon:
        return enroll(anon, token, "p-a"), enroll(anon, token, "p-b")


def effective(coordinator: Coordinator, a: Enrolled, b: Enrolled) -> str:
    return str(peers_by_name(netmap(coordinator, a))[b.name]["p2p"])


def peer_rate(coordinator: Coordinator, a: Enrolled, b: Enrolled) -> str | None:
    rate = peers_by_name(netmap(coordinator, a))[b.name]["rate"]
    return None if rate is None else str(rate)


def test_set_off_auto_and_clear(
    wgmesh: Cli, coordinator: Coordinator, pair: tuple[Enrolled, Enrolled]
) -> None:
    a, b = pair
    assert wgmesh("pair", "set", "p-a", "p-b", "--p2p", "off", "--json").json() == {
        "a": "p-a",
        "b": "p-b",
        "p2p": "off",
        "rate": None,
    }
    assert effective(coordinator, a, b) == "off" and effective(coordinator, b, a) == "off"
    assert wgmesh("pairs", "--json").json() == {
        "pairs": [{"a": "p-a", "b": "p-b", "p2p": "off", "rate": None}]
    }
    listed = wgmesh("pair", "list")
    assert listed.code == 0 and "p-a" in listed.out and "off" in listed.out

    r = wgmesh("pair", "set", "p-b", "p-a", "--p2p", "auto")
    assert r.code == 0, r.err
    assert "p-b and p-a: p2p auto, rate limit none (pair overrides)" in r.out
    assert effective(coordinator, a, b) == "auto"

    assert wgmesh("pair", "set", "p-a", "p-b", "--p2p", "clear", "--json").json() == {
        "a": "p-a",
        "b": "p-b",
        "p2p": None,
        "rate": None,
    }
    assert wgmesh("pair", "--json").json() == {"pairs": []}
    r = wgmesh("pair", "set", "p-a", "p-b", "--p2p", "clear")
    assert r.code == 0 and "cleared the overrides of p-a and p-b" in r.out
    assert "no pair overrides" in wgmesh("pair").out


def test_pair_set_refusals(wgmesh: Cli, pair: tuple[Enrolled, Enrolled]) -> None:
    r = wgmesh("pair", "set", "p-a", "p-a", "--p2p", "off")
    assert (r.code, r.one_line_error()) == (2, "wgmesh: a pair needs two different nodes")
    r = wgmesh("pair", "set", "p-a", "ghost", "--p2p", "off")
    assert (r.code, r.one_line_error()) == (1, "wgmesh: no node named 'ghost'")
    r = wgmesh("pair", "set", "p-a", "p-b", "--p2p", "maybe")
    assert r.code == 2
    r.one_line_error()
    r = wgmesh("pair", "set", "p-a", "p-b")
    assert (r.code, r.one_line_error()) == (2, "wgmesh: nothing to change: give --p2p and/or --rate")
    r = wgmesh("pair", "set", "p-a", "p-b", "--rate", "20mbps")
    assert r.code == 2 and "bit, kbit, mbit or gbit" in r.one_line_error()


def test_pair_rate_set_kept_with_p2p_and_removed(
    wgmesh: Cli, coordinator: Coordinator, pair: tuple[Enrolled, Enrolled]
) -> None:
    a, b = pair
    r = wgmesh("pair", "set", "p-a", "p-b", "--rate", "20mbit", "--json")
    assert r.json() == {"a": "p-a", "b": "p-b", "p2p": None, "rate": "20mbit"}
    # Both ends get the limit for what they send the other.
    assert peer_rate(coordinator, a, b) == "20mbit" and peer_rate(coordinator, b, a) == "20mbit"
    # Setting the P2P override keeps the rate, and the other way round.
    wgmesh("pair", "set", "p-a", "p-b", "--p2p", "off")
    assert wgmesh("pairs", "--json").json()["pairs"] == [
        {"a": "p-a", "b": "p-b", "p2p": "off", "rate": "20mbit"}
    ]
    listed = wgmesh("pair").out
    assert "20mbit" in listed and "off" in listed
    wgmesh("pair", "set", "p-a", "p-b", "--rate", "none")
    assert wgmesh("pairs", "--json").json()["pairs"] == [{"a": "p-a", "b": "p-b", "p2p": "off", "rate": None}]
    assert peer_rate(coordinator, a, b) is None
    wgmesh("pair", "set", "p-a", "p-b", "--p2p", "clear")
    assert wgmesh("pairs", "--json").json() == {"pairs": []}
