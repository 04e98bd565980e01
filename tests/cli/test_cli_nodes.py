"""`wgmesh nodes` list/show/add/set/rm and its `node` alias, against a real coordinator."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cli_harness import Cli, Result
from coordinator_harness import (
    Coordinator,
    Enrolled,
    create_token,
    enroll,
    netmap,
    peers_by_name,
    post_status,
)

from wgmesh import keys


@pytest.fixture(scope="module")
def gateways(coordinator: Coordinator, admin: httpx.Client) -> dict[str, Enrolled]:
    token = create_token(admin, reusable=True, tags=["prod"], allow_subnets=["10.0.0.0/8"])["token"]
    with coordinator.anonymous() as anon:
        return {
            "gw-a": enroll(anon, token, "gw-a", subnets=["10.1.0.0/16"]),
            "gw-b": enroll(anon, token, "gw-b", subnets=["10.1.2.0/24", "10.20.0.0/16"]),
        }


def api_node(admin: httpx.Client, name: str) -> dict[str, Any] | None:
    r = admin.get(f"/api/v1/nodes/{name}")
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return dict(r.json())


def without_clock(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k != "online"}


@pytest.mark.parametrize(
    "argv", [("nodes",), ("nodes", "list"), ("node", "list"), ("nodes", "--json", "list")]
)
def test_list_json_is_the_api_node_list(
    wgmesh: Cli, admin: httpx.Client, gateways: Any, argv: tuple[str, ...]
) -> None:
    args = argv if "--json" in argv else (*argv, "--json")
    doc = wgmesh(*args).json()
    api = admin.get("/api/v1/nodes").json()
    assert [without_clock(n) for n in doc["nodes"]] == [without_clock(n) for n in api["nodes"]]
    assert {"gw-a", "gw-b"} <= {n["name"] for n in doc["nodes"]}


def test_list_table(wgmesh: Cli, gateways: dict[str, Enrolled]) -> None:
    r = wgmesh("nodes")
    assert r.code == 0, r.err
    for text in (
        "NAME",
        "gw-a",
        "gw-b",
        gateways["gw-a"].first_netmap["overlay_ip"],
        "agent",
        "prod",
        "never",
    ):
        assert text in r.out, text


def test_show_by_name_and_id(wgmesh: Cli, admin: httpx.Client, gateways: dict[str, Enrolled]) -> None:
    b = gateways["gw-b"]
    doc = wgmesh("nodes", "show", "gw-b", "--json").json()
    api = api_node(admin, "gw-b")
    assert api is not None and without_clock(doc) == without_clock(api)
    assert wgmesh("node", "show", str(b.node_id), "--json").json()["name"] == "gw-b"
    r = wgmesh("nodes", "show", "gw-b")
    assert r.code == 0, r.err
    for text in (
        b.keypair.public_key,
        "10.1.2.0/24",
        "conflict",
        "10.1.0.0/16@gw-a",
        "10.20.0.0/16",
        "active",
    ):
        assert text in r.out, text


def test_show_unknown_node_fails_with_one_line(wgmesh: Cli, gateways: Any) -> None:
    r = wgmesh("nodes", "show", "nope")
    assert r.code == 1
    assert r.one_line_error() == "wgmesh: no node named 'nope'"


def test_add_a_static_peer_with_every_flag(wgmesh: Cli, admin: httpx.Client, gateways: Any) -> None:
    own = keys.generate_keypair().public_key
    doc = wgmesh(
        "nodes",
        "add",
        "phone",
        "--public-key",
        own,
        "--subnet",
        "192.168.50.0/24",
        "--subnet",
        "192.168.51.0/24",
        "--endpoint",
        "198.51.100.40:51000",
        "--listen-port",
        "51000",
        "--p2p",
        "off",
        "--tag",
        "mobile",
        "--json",
    ).json()
    assert doc["name"] == "phone" and doc["static"] is False  # "static": keys made by the coordinator
    assert doc["public_key"] == own
    assert doc["subnets"] == ["192.168.50.0/24", "192.168.51.0/24"]
    assert (doc["endpoints"], doc["listen_port"], doc["p2p"], doc["tags"]) == (
        ["198.51.100.40:51000"],
        51000,
        "off",
        ["mobile"],
    )
    assert without_clock(doc) == without_clock(api_node(admin, "phone") or {})


def test_add_generates_keys_by_default_and_points_at_export(
    wgmesh: Cli, admin: httpx.Client, gateways: Any
) -> None:
    r = wgmesh("nodes", "add", "printer")
    assert r.code == 0, r.err
    assert "added static peer printer" in r.out
    assert "wgmesh export printer" in r.err
    node = api_node(admin, "printer")
    assert node is not None and node["static"] is True


def test_add_refusals(wgmesh: Cli, gateways: Any) -> None:
    r = wgmesh("nodes", "add", "gw-a")  # the name is taken: a failure (409)
    assert r.code == 1, r.err
    assert "gw-a" in r.one_line_error()
    r = wgmesh("nodes", "add", "cam", "--subnet", "10.9.0.1/16")  # refused input (422): bad usage
    assert r.code == 2
    assert "host bits set; did you mean 10.9.0.0/16?" in r.one_line_error()
    r = wgmesh("nodes", "add", "Bad_Name")
    assert r.code == 2
    r.one_line_error()


def test_set_p2p_and_tags(wgmesh: Cli, admin: httpx.Client, gateways: Any) -> None:
    doc = wgmesh("node", "set", "gw-a", "--p2p", "off", "--tag", "edge", "--tag", "eu", "--json").json()
    assert (doc["p2p"], doc["tags"]) == ("off", ["edge", "eu"])
    node = api_node(admin, "gw-a")
    assert node is not None and (node["p2p"], node["tags"]) == ("off", ["edge", "eu"])
    r = wgmesh("nodes", "set", "gw-a", "--p2p", "auto")
    assert r.code == 0, r.err
    assert "gw-a: p2p auto, rate limit none, MTU ceiling network default, tags edge, eu" in r.out
    doc = wgmesh("node", "set", "gw-a", "--clear-tags", "--json").json()
    assert (doc["p2p"], doc["tags"]) == ("auto", [])


def test_set_rate_reaches_the_netmap_and_none_removes_it(
    wgmesh: Cli, admin: httpx.Client, coordinator: Any, gateways: Any
) -> None:
    doc = wgmesh("node", "set", "gw-a", "--rate", "1.5mbit", "--json").json()
    assert doc["rate"] == "1500kbit"  # canonical spelling
    shown = wgmesh("node", "show", "gw-a").out
    assert "rate limit" in shown and "1500kbit" in shown
    node = api_node(admin, "gw-a")
    assert node is not None and node["rate"] == "1500kbit"
    r = wgmesh("node", "set", "gw-a", "--rate", "none")
    assert r.code == 0 and "rate limit none" in r.out
    node = api_node(admin, "gw-a")
    assert node is not None and node["rate"] is None
    for bad in ("20mbps", "0bit", "fast"):
        r = wgmesh("node", "set", "gw-a", "--rate", bad)
        assert r.code == 2, bad
        assert "rate" in r.one_line_error()


def test_set_mtu_reaches_the_netmap_and_none_clears_it(
    wgmesh: Cli, admin: httpx.Client, coordinator: Coordinator, gateways: dict[str, Enrolled]
) -> None:
    doc = wgmesh("node", "set", "gw-a", "--mtu", "1380", "--json").json()
    assert (doc["mtu"], doc["max_mtu"]) == (1380, None)
    node = api_node(admin, "gw-a")
    assert node is not None and node["mtu"] == 1380
    assert netmap(coordinator, gateways["gw-a"])["mtu"] == 1380
    assert peers_by_name(netmap(coordinator, gateways["gw-b"]))["gw-a"]["mtu"] == 1380
    r = wgmesh("node", "set", "gw-a", "--mtu", "1380")
    assert r.code == 0 and "MTU ceiling 1380" in r.out
    shown = wgmesh("node", "show", "gw-a").out
    assert "MTU ceiling" in shown and "1380 (node)" in shown and "underlay max MTU" in shown
    listed = wgmesh("nodes").out
    assert "MTU" in listed and "1380 (node)" in listed
    r = wgmesh("node", "set", "gw-a", "--mtu", "none")
    assert r.code == 0 and "MTU ceiling network default" in r.out
    node = api_node(admin, "gw-a")
    assert node is not None and node["mtu"] is None
    assert netmap(coordinator, gateways["gw-a"])["mtu"] == 1420
    assert "network default (1420)" in wgmesh("node", "show", "gw-a").out


def test_the_underlay_shows_when_it_lowers_the_mtu(
    wgmesh: Cli, coordinator: Coordinator, gateways: dict[str, Enrolled]
) -> None:
    post_status(coordinator, gateways["gw-b"], {"max_mtu": 1360, "mtu": 1360})
    shown = wgmesh("node", "show", "gw-b").out
    assert "1360 (underlay)" in shown
    assert "1360 (underlay)" in wgmesh("nodes").out
    assert wgmesh("node", "show", "gw-b", "--json").json()["max_mtu"] == 1360


@pytest.mark.parametrize("bad", ["1279", "9001", "0", "jumbo", "1400.5", "-1400", ""])
def test_set_bad_mtu_is_bad_usage_and_changes_nothing(
    wgmesh: Cli, admin: httpx.Client, gateways: Any, bad: str
) -> None:
    before = api_node(admin, "gw-a")
    r = wgmesh("node", "set", "gw-a", f"--mtu={bad}")
    assert r.code == 2, r.err
    assert "must be a whole number of bytes from 1280 to 9000, or none" in r.one_line_error()
    assert api_node(admin, "gw-a") == before


def test_set_refusals(wgmesh: Cli, gateways: Any) -> None:
    r = wgmesh("node", "set", "gw-a")
    assert (r.code, r.one_line_error()) == (
        2,
        "wgmesh: nothing to change: give --p2p, --rate, --mtu, --tag or --clear-tags",
    )
    r = wgmesh("node", "set", "gw-a", "--p2p", "sometimes")
    assert r.code == 2
    assert "invalid choice: 'sometimes'" in r.one_line_error()
    r = wgmesh("node", "set", "gw-a", "--tag", "NOT OK")
    assert r.code == 2
    assert "tag must be" in r.one_line_error()
    r = wgmesh("node", "set", "gw-a", "--tag", "x", "--clear-tags")
    assert r.code == 2
    r = wgmesh("node", "set", "ghost", "--p2p", "off")
    assert (r.code, r.one_line_error()) == (1, "wgmesh: no node named 'ghost'")


def add_static(admin: httpx.Client, name: str) -> None:
    r = admin.post("/api/v1/nodes", json={"name": name, "generate_keys": True})
    assert r.status_code == 201, r.text


def test_rm_without_a_terminal_needs_yes(wgmesh: Cli, admin: httpx.Client) -> None:
    add_static(admin, "rm-me")
    r = wgmesh("nodes", "rm", "rm-me")
    assert r.code == 2
    assert "without confirmation" in r.one_line_error() and "--yes" in r.err
    assert api_node(admin, "rm-me") is not None
    doc = wgmesh("nodes", "rm", "rm-me", "--yes", "--json").json()
    assert doc["name"] == "rm-me"
    assert api_node(admin, "rm-me") is None
    r = wgmesh("nodes", "rm", "rm-me", "-y")
    assert (r.code, r.one_line_error()) == (1, "wgmesh: no node named 'rm-me'")


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal: (master, slave); the CLI reads the slave as its stdin."""
    master, slave = os.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def answer(wgmesh: Cli, terminal: tuple[int, int], text: str, *args: str) -> Result:
    master, slave = terminal
    os.write(master, text.encode())  # waits in the terminal's line buffer until the CLI reads it
    return wgmesh(*args, stdin=slave)


def test_rm_on_a_terminal_asks_and_no_keeps_the_node(wgmesh: Cli, admin: httpx.Client, terminal: Any) -> None:
    add_static(admin, "keep-me")
    r = answer(wgmesh, terminal, "n\n", "nodes", "rm", "keep-me")
    assert r.code == 1
    assert "Remove node keep-me" in r.err and "[y/N]" in r.err
    assert r.err.strip().endswith("wgmesh: not removed")
    assert api_node(admin, "keep-me") is not None


def test_rm_on_a_terminal_removes_on_yes(wgmesh: Cli, admin: httpx.Client, terminal: Any) -> None:
    add_static(admin, "drop-me")
    r = answer(wgmesh, terminal, "y\n", "node", "remove", "drop-me")
    assert r.code == 0, r.err
    assert "removed node drop-me" in r.out
    assert api_node(admin, "drop-me") is None


def test_rotate_asks_the_agent_and_waits_for_it(
    wgmesh: Cli, coordinator: Coordinator, admin: httpx.Client
) -> None:
    token = create_token(admin)["token"]
    with coordinator.anonymous() as anon:
        node = enroll(anon, token, "gw-rot")
    r = wgmesh("nodes", "rotate", "gw-rot")
    assert r.code == 0, r.err
    assert r.out.strip() == "gw-rot: key rotation requested; its agent rotates at its next netmap"
    assert re.search(r"^key rotation +requested \d+s ago", wgmesh("nodes", "show", "gw-rot").out, re.M)
    # Nobody rotates: --wait gives up with one line, and the request stands.
    r = wgmesh("nodes", "rotate", "gw-rot", "--wait", "0.3")
    assert r.code == 1
    assert r.one_line_error() == (
        "wgmesh: gw-rot's agent has not rotated its key within 0.3 s (is it online?); the request stands"
    )
    # The agent's part, as it does it: a new key, and the request is done.
    new = keys.generate_keypair()
    with coordinator.node(node.credential) as client:
        assert client.post("/api/v1/node/key", json={"public_key": new.public_key}).status_code == 200
    r = wgmesh("nodes", "rotate", "gw-rot", "--json")
    assert r.code == 0 and r.json()["rotate_requested_at"] is not None
    with coordinator.node(node.credential) as client:
        assert (
            client.post(
                "/api/v1/node/key", json={"public_key": keys.generate_keypair().public_key}
            ).status_code
            == 200
        )
    shown = wgmesh("nodes", "show", "gw-rot")
    assert "key rotation" not in shown.out


def test_rotate_a_static_peer_at_once_and_refusals(wgmesh: Cli, admin: httpx.Client, gateways: Any) -> None:
    add_static(admin, "static-rot")
    before = api_node(admin, "static-rot")
    assert before is not None
    r = wgmesh("node", "rotate", "static-rot")
    assert r.code == 0, r.err
    after = api_node(admin, "static-rot")
    assert after is not None and after["public_key"] != before["public_key"]
    assert r.out.strip() == f"static-rot: new key {after['public_key']}"
    assert "wgmesh export static-rot" in r.err
    r = wgmesh("node", "rotate", "ghost")
    assert (r.code, r.one_line_error()) == (1, "wgmesh: no node named 'ghost'")
    r = wgmesh("node", "rotate", "gw-a", "--wait", "-1")
    assert (r.code, r.one_line_error()) == (2, "wgmesh: --wait must be between 0 and 3600 seconds")
