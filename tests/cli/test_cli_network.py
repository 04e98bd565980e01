"""`wgmesh network [show|set]`: the network-wide P2P policy and default tunnel MTU, against a real
coordinator."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from cli_harness import Cli
from coordinator_harness import Coordinator, Enrolled, create_token, enroll, netmap, version


@pytest.fixture(scope="module")
def gateway(coordinator: Coordinator, admin: httpx.Client) -> Enrolled:
    token = create_token(admin)["token"]
    with coordinator.anonymous() as anon:
        return enroll(anon, token, "gw-a")


@pytest.fixture
def restored(admin: httpx.Client) -> Iterator[None]:
    yield
    r = admin.patch("/api/v1/network", json={"mtu": 1420, "p2p": "auto"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("argv", [("network",), ("network", "show"), ("network", "--json", "show")])
def test_show_json_is_the_api_network(wgmesh: Cli, admin: httpx.Client, argv: tuple[str, ...]) -> None:
    args = argv if "--json" in argv else (*argv, "--json")
    doc = wgmesh(*args).json()
    assert doc == admin.get("/api/v1/network").json()
    assert doc["mtu"] == 1420


def test_show_table(wgmesh: Cli) -> None:
    r = wgmesh("network")
    assert r.code == 0, r.err
    for text in ("default", "100.96.0.0/16", "p2p", "auto", "MTU", "1420 (default tunnel MTU)"):
        assert text in r.out, text


def test_set_mtu_reaches_the_netmaps(
    wgmesh: Cli, admin: httpx.Client, coordinator: Coordinator, gateway: Enrolled, restored: None
) -> None:
    before = version(admin)
    doc = wgmesh("network", "set", "--mtu", "1400", "--json").json()
    assert (doc["mtu"], doc["p2p"]) == (1400, "auto")
    assert admin.get("/api/v1/network").json()["mtu"] == 1400
    assert version(admin) > before
    assert netmap(coordinator, gateway)["mtu"] == 1400
    assert "1400 (default tunnel MTU)" in wgmesh("network", "show").out
    r = wgmesh("network", "set", "--p2p", "off", "--mtu", "8900")
    assert r.code == 0, r.err
    assert "network default: p2p off, MTU 8900" in r.out
    assert netmap(coordinator, gateway)["mtu"] == 8900
    assert netmap(coordinator, gateway)["p2p"] == "off"


@pytest.mark.parametrize("bad", ["1279", "9001", "none", "big", "1400.0", ""])
def test_bad_mtu_is_bad_usage_and_changes_nothing(wgmesh: Cli, admin: httpx.Client, bad: str) -> None:
    before = admin.get("/api/v1/network").json()
    r = wgmesh("network", "set", f"--mtu={bad}")
    assert r.code == 2
    assert "must be a whole number of bytes from 1280 to 9000" in r.one_line_error()
    assert admin.get("/api/v1/network").json() == before


def test_set_refusals(wgmesh: Cli) -> None:
    r = wgmesh("network", "set")
    assert (r.code, r.one_line_error()) == (
        2,
        "wgmesh: nothing to change: give --p2p, --mtu, --auto-approve and/or --alias-pool",
    )
    r = wgmesh("network", "set", "--p2p", "sometimes")
    assert r.code == 2
    assert "invalid choice: 'sometimes'" in r.one_line_error()
    r = wgmesh("network", "frobnicate")
    assert r.code == 2
    r.one_line_error()
