"""`wgmesh tokens` create/list/revoke against a real coordinator; created tokens really enroll."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cli_harness import Cli
from coordinator_harness import Coordinator, enroll, enroll_body

TOKEN_FIELDS = {
    "id",
    "reusable",
    "expires_at",
    "revoked",
    "uses",
    "tags",
    "p2p",
    "description",
    "created_at",
    "allow_subnets",
    "replaces",
}


def test_create_prints_only_the_secret_on_stdout_and_it_enrolls(
    wgmesh: Cli, coordinator: Coordinator
) -> None:
    r = wgmesh("tokens", "create")
    assert r.code == 0, r.err
    secret = r.out.strip()
    assert secret and "\n" not in secret
    assert "one-time token" in r.err and "expires in 23h" in r.err and "shown only this once" in r.err
    with coordinator.anonymous() as anon:
        node = enroll(anon, secret, "tok-a")
        assert node.node_id > 0
        again = anon.post("/api/v1/enroll", json=enroll_body(secret, "tok-b"))
        assert again.status_code == 401  # one-time


def test_create_with_every_flag_json(wgmesh: Cli, coordinator: Coordinator, admin: httpx.Client) -> None:
    before = datetime.now(UTC)
    doc = wgmesh(
        "token",
        "create",
        "--reusable",
        "--expires",
        "30m",
        "--tag",
        "edge",
        "--tag",
        "eu",
        "--p2p",
        "off",
        "--description",
        "eu gateways",
        "--json",
    ).json()
    assert set(doc) == TOKEN_FIELDS | {"token"}
    assert (doc["reusable"], doc["tags"], doc["p2p"], doc["description"], doc["revoked"], doc["uses"]) == (
        True,
        ["edge", "eu"],
        "off",
        "eu gateways",
        False,
        0,
    )
    expires = datetime.fromisoformat(doc["expires_at"])
    assert before + timedelta(minutes=29) < expires < datetime.now(UTC) + timedelta(minutes=31)
    with coordinator.anonymous() as anon:
        for name in ("tok-c", "tok-d"):  # reusable
            enroll(anon, doc["token"], name)
    node = admin.get("/api/v1/nodes/tok-c").json()
    assert (node["tags"], node["p2p"]) == (["edge", "eu"], "off")


@pytest.mark.parametrize(
    ("flag", "seconds"), [("never", None), ("90s", 90), ("7d", 7 * 86400), ("2w", 14 * 86400)]
)
def test_expires_forms(wgmesh: Cli, flag: str, seconds: int | None) -> None:
    before = datetime.now(UTC)
    doc = wgmesh("tokens", "create", "--expires", flag, "--json").json()
    if seconds is None:
        assert doc["expires_at"] is None
    else:
        expires = datetime.fromisoformat(doc["expires_at"])
        assert abs((expires - before).total_seconds() - seconds) < 30


@pytest.mark.parametrize("flag", ["24", "3x", "0h", "-5m", "11000d", ""])
def test_bad_expiry_is_bad_usage(wgmesh: Cli, flag: str) -> None:
    r = wgmesh("tokens", "create", "--expires", flag)
    assert r.code == 2
    assert "--expires" in r.one_line_error()
    assert r.out == ""


def test_list_and_revoke(wgmesh: Cli, admin: httpx.Client) -> None:
    created = wgmesh("tokens", "create", "--description", "to revoke", "--json").json()
    listed = wgmesh("tokens", "--json").json()
    assert listed == admin.get("/api/v1/tokens").json()
    assert set(listed) == {"tokens"}
    mine = next(t for t in listed["tokens"] if t["id"] == created["id"])
    assert set(mine) == TOKEN_FIELDS  # the secret is never listed
    table = wgmesh("tokens", "list")
    assert table.code == 0, table.err
    assert created["token"] not in table.out
    for text in ("ID", "one-time", "reusable", "valid", "used", "to revoke", "in 23h", "never"):
        assert text in table.out, text

    revoked = wgmesh("tokens", "revoke", str(created["id"]), "--json").json()
    assert (revoked["id"], revoked["revoked"]) == (created["id"], True)
    assert "revoked" in wgmesh("tokens").out
    r = wgmesh("token", "revoke", str(created["id"]))
    assert r.code == 0 and f"revoked token {created['id']}" in r.out  # revoking again is harmless


def test_revoke_refusals(wgmesh: Cli) -> None:
    r = wgmesh("tokens", "revoke", "999999")
    assert (r.code, r.one_line_error()) == (1, "wgmesh: token 999999 does not exist")
    for bad in ("abc", "0", "-1"):
        r = wgmesh("tokens", "revoke", bad)
        assert r.code == 2
        r.one_line_error()


def test_create_replace_names_the_node_and_enrolls_it_only(
    wgmesh: Cli, coordinator: Coordinator, admin: httpx.Client
) -> None:
    with coordinator.anonymous() as anon:
        first = enroll(anon, wgmesh("tokens", "create").out.strip(), "tok-replaced")
    r = wgmesh("tokens", "create", "--replace", "tok-replaced")
    assert r.code == 0, r.err
    assert "replaces node tok-replaced (enrolls that name only)" in r.err
    listed = wgmesh("tokens", "list", "--json").json()["tokens"]
    assert listed[0]["replaces"] == "tok-replaced"
    assert "replaces tok-replaced" in wgmesh("tokens").out
    with coordinator.anonymous() as anon:
        second = enroll(anon, r.out.strip(), "tok-replaced")
    assert second.node_id == first.node_id
    r = wgmesh("tokens", "create", "--replace", "ghost")
    assert (r.code, r.one_line_error()) == (1, "wgmesh: no node named 'ghost' to replace")
    r = wgmesh("tokens", "create", "--replace", "Not_A_Name")
    assert r.code == 2
