"""Text a node reported before the API refused control characters (written into the database with SQL)
is shown escaped by `wgmesh status`, `wgmesh status NODE` and `wgmesh tokens`: nothing reaches the
terminal that could colour it, retitle it or move the cursor back over a line."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import httpx
import pytest
from cli_harness import Cli
from coordinator_harness import (
    HOSTILE,
    SHOWN,
    Coordinator,
    Enrolled,
    create_token,
    enroll,
    hostile,
    post_status,
    write_report,
)


@pytest.fixture(scope="module")
def stored(coordinator: Coordinator, admin: httpx.Client) -> tuple[Enrolled, Enrolled]:
    """gw-a reports gw-b through a relay; then its stored report is rewritten with hostile text."""
    token = create_token(admin, reusable=True, allow_subnets=["10.0.0.0/8"])
    with coordinator.anonymous() as anon:
        a = enroll(anon, token["token"], "gw-a", subnets=["10.1.0.0/24"])
        b = enroll(anon, token["token"], "gw-b", subnets=["10.2.0.0/24"])
    peer = {"public_key": b.keypair.public_key, "path": "relay"}
    post_status(coordinator, a, {"peers": [peer]})
    write_report(
        coordinator.db,
        a.node_id,
        {
            "peers": [
                {
                    **peer,
                    "relay": hostile("relay"),
                    "reason": hostile("reason"),
                    "endpoint": hostile("endpoint"),
                }
            ],
            "shadowed": [{"prefix": "10.2.0.0/24", "gateway": "gw-b", "interface": hostile("lan")}],
        },
    )
    with closing(sqlite3.connect(coordinator.db)) as conn, conn:
        conn.execute("UPDATE tokens SET description = ? WHERE id = ?", (hostile("site"), token["id"]))
    return a, b


def assert_escaped(out: str, *texts: str) -> None:
    for bad in ("\x1b", "\x07", "\r"):
        assert bad not in out, repr(out)
    for text in texts:
        assert f"{SHOWN[0]}{text}{SHOWN[1]}x{SHOWN[2]}" in out, out
    assert HOSTILE[0] not in out


def test_status_shows_a_shadowing_interface_escaped(wgmesh: Cli, stored: tuple[Enrolled, Enrolled]) -> None:
    result = wgmesh("status")
    assert result.code == 0, result.err
    assert_escaped(result.out.replace("\n", ""), "lan")


def test_status_node_shows_relay_and_reason_escaped(wgmesh: Cli, stored: tuple[Enrolled, Enrolled]) -> None:
    result = wgmesh("status", "gw-a")
    assert result.code == 0, result.err
    assert_escaped(result.out.replace("\n", ""), "relay", "reason")


def test_tokens_shows_a_description_escaped(wgmesh: Cli, stored: tuple[Enrolled, Enrolled]) -> None:
    result = wgmesh("tokens")
    assert result.code == 0, result.err
    assert_escaped(result.out.replace("\n", ""), "site")


def test_json_output_keeps_the_stored_text_as_json_escapes(
    wgmesh: Cli, stored: tuple[Enrolled, Enrolled]
) -> None:
    # --json is for programs: the exact value, in JSON's own escapes (never a raw control character)
    result = wgmesh("status", "gw-a", "--json")
    assert "\x1b" not in result.out and "\r" not in result.out
    peer = next(p for p in result.json()["peers"] if p["name"] == "gw-b")
    assert peer["reason"] == hostile("reason")
