"""`wgmesh admin-tokens` create/list/revoke and `wgmesh audit` against a real coordinator: exit codes, the
secret alone on stdout, a read-only token refused with one line, the audit log of what the CLI did."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cli_harness import Cli

ADMIN_TOKEN_FIELDS = {"name", "read_only", "source", "created_at", "revoked_at"}


def test_create_prints_only_the_secret_and_it_works(wgmesh: Cli, cli_env: dict[str, str]) -> None:
    r = wgmesh("admin-tokens", "create", "cli-ops")
    assert r.code == 0, r.err
    secret = r.out.strip()
    assert secret.startswith("wga_") and "\n" not in secret and len(secret) >= 47
    assert "created full admin token cli-ops" in r.err and "shown only this once" in r.err
    r = wgmesh("nodes", "--json", env={**cli_env, "WGMESH_TOKEN": secret})
    assert r.code == 0, r.err


def test_a_read_only_token_reads_and_is_refused_a_change_with_one_line(
    wgmesh: Cli, cli_env: dict[str, str]
) -> None:
    doc = wgmesh("admin-token", "create", "cli-reader", "--read-only", "--json").json()
    assert set(doc) == ADMIN_TOKEN_FIELDS | {"token"} and doc["read_only"] is True
    env = {**cli_env, "WGMESH_TOKEN": doc["token"]}
    assert wgmesh("tokens", "list", env=env).code == 0
    assert wgmesh("audit", env=env).code == 0
    r = wgmesh("tokens", "create", env=env)
    assert (r.code, r.one_line_error()) == (
        1,
        "wgmesh: admin token 'cli-reader' is read-only: it cannot change anything",
    )
    assert r.out == ""


def test_list_and_revoke(wgmesh: Cli, cli_env: dict[str, str], admin: httpx.Client) -> None:
    secret = wgmesh("admin-tokens", "create", "cli-leaver").out.strip()
    listed = wgmesh("admin-tokens", "--json").json()
    assert listed == admin.get("/api/v1/admin-tokens").json()
    assert all(set(t) == ADMIN_TOKEN_FIELDS for t in listed["admin_tokens"])
    table = wgmesh("admin-tokens", "list")
    assert table.code == 0 and secret not in table.out
    for text in ("NAME", "cli-leaver", "full", "valid", "api", "env"):
        assert text in table.out, text
    r = wgmesh("admin-tokens", "revoke", "cli-leaver")
    assert (r.code, r.out.strip()) == (
        0,
        "revoked admin token cli-leaver; its dashboard sessions are logged out",
    )
    assert "revoked" in wgmesh("admin-tokens").out
    r = wgmesh("nodes", env={**cli_env, "WGMESH_TOKEN": secret})
    assert r.code == 1 and "admin token is not valid" in r.one_line_error()


def test_refusals(wgmesh: Cli) -> None:
    r = wgmesh("admin-tokens", "revoke", "ghost")
    assert (r.code, r.one_line_error()) == (1, "wgmesh: admin token 'ghost' does not exist")
    wgmesh("admin-tokens", "create", "cli-twice")
    r = wgmesh("admin-tokens", "create", "cli-twice")
    assert r.code == 1 and "exists" in r.one_line_error()
    for bad in (("create", "Bad Name"), ("revoke", "a/b"), ("create",)):
        r = wgmesh("admin-tokens", *bad)
        assert r.code == 2, bad
        r.one_line_error()


def test_audit_shows_what_the_cli_did_without_secrets(wgmesh: Cli) -> None:
    secret = wgmesh("admin-tokens", "create", "cli-audited", "--read-only").out.strip()
    doc = wgmesh("audit", "--since", "10m", "--json").json()
    mine = [e for e in doc["entries"] if e["target"] == "cli-audited"]
    assert [(e["actor"], e["action"], e["detail"]) for e in mine] == [
        ("env", "admin_token.create", {"name": "cli-audited", "read_only": True})
    ]
    assert mine[0]["client"] == "127.0.0.1"
    assert secret not in str(doc)
    table = wgmesh("audit")
    assert table.code == 0 and "admin_token.create" in table.out and "cli-audited" in table.out
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert wgmesh("audit", "--since", later, "--json").json() == {"entries": []}
    assert len(wgmesh("audit", "--limit", "1", "--json").json()["entries"]) == 1


@pytest.mark.parametrize("flag", ["--since=yesterday", "--since=0h", "--limit=0", "--limit=5000"])
def test_bad_audit_flags_are_bad_usage(wgmesh: Cli, flag: str) -> None:
    r = wgmesh("audit", flag)
    assert r.code == 2 and r.out == ""
    assert flag.split("=", maxsplit=1)[0] in r.one_line_error()


def test_audit_shows_admin_written_text_as_text_not_markup(wgmesh: Cli, admin: httpx.Client) -> None:
    # A token description is free text an admin wrote; the audit detail carries it. Rich would read
    # `[/x]` as a closing tag (and fail the whole listing) and `[conceal]` as a style.
    r = admin.post("/api/v1/tokens", json={"description": "[conceal]hidden[/conceal] and [/x]"})
    assert r.status_code == 201, r.text
    table = wgmesh("audit", "--limit", "5")
    assert table.code == 0, table.err
    assert "[conceal]" in table.out and "[/x]" in table.out  # shown as written (a narrow table folds it)
