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


def test_set_off_auto_and_clear(
    wgmesh: Cli, coordinator: Coordinator, pair: tuple[Enrolled, Enrolled]
) -> None:
    a, b = pair
    assert wgmesh("pair", "set", "p-a", "p-b", "--p2p", "off", "--json").json() == {
        "a": "p-a",
        "b": "p-b",
        "p2p": "off",
    }
    assert effective(coordinator, a, b) == "off" and effective(coordinator, b, a) == "off"
    assert wgmesh("pairs", "--json").json() == {"pairs": [{"a": "p-a", "b": "p-b", "p2p": "off"}]}
    listed = wgmesh("pair", "list")
    assert listed.code == 0 and "p-a" in listed.out and "off" in listed.out

    r = wgmesh("pair", "set", "p-b", "p-a", "--p2p", "auto")
    assert r.code == 0, r.err
    assert "P2P between p-b and p-a: auto (pair override)" in r.out
    assert effective(coordinator, a, b) == "auto"

    assert wgmesh("pair", "set", "p-a", "p-b", "--p2p", "clear", "--json").json() == {
        "a": "p-a",
        "b": "p-b",
        "p2p": None,
    }
    assert wgmesh("pair", "--json").json() == {"pairs": []}
    r = wgmesh("pair", "set", "p-a", "p-b", "--p2p", "clear")
    assert r.code == 0 and "cleared the P2P override of p-a and p-b" in r.out
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
    assert r.code == 2
    assert "--p2p" in r.one_line_error()
