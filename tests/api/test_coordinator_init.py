"""`wgmesh-coordinator init`: the admin token is printed once, stored hashed, and never replaced."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from pathlib import Path

from coordinator_harness import Coordinator, assert_error, coordinator_command, running

TOKEN_LINE = re.compile(r"admin token \(shown once, store it safely\): (wga_\S+)")


def init(db: Path, *args: str, admin_token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WGMESH_ADMIN_TOKEN"}
    if admin_token is not None:
        env["WGMESH_ADMIN_TOKEN"] = admin_token
    return subprocess.run(
        coordinator_command(db, "init", *args),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_init_prints_an_admin_token_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    first = init(db)
    assert first.returncode == 0, first.stderr
    tokens = TOKEN_LINE.findall(first.stdout)
    assert len(tokens) == 1, first.stdout
    token = tokens[0]
    assert token not in first.stderr

    second = init(db)
    assert second.returncode == 0, second.stderr
    assert "wga_" not in second.stdout + second.stderr
    assert "already initialised" in second.stdout

    raw = db.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("c.db-*"))
    assert token.encode() not in raw  # stored hashed
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from admin_tokens").fetchone() == (1,)

    with running(Coordinator(db=db, log=tmp_path / "c.log", admin_token=None)) as c:
        with c.admin(token) as admin:
            assert admin.get("/api/v1/nodes").status_code == 200
        with c.admin("wga_" + "x" * 43) as wrong:
            assert_error(wrong.get("/api/v1/nodes"), 401, "invalid_credentials")


def test_init_takes_the_admin_token_from_the_environment_and_prints_none(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    supplied = "supplied-admin-token-0123"
    out = init(db, "--overlay", "100.64.0.0/24", "--p2p", "off", admin_token=supplied)
    assert out.returncode == 0, out.stderr
    assert supplied not in out.stdout + out.stderr
    assert "wga_" not in out.stdout
    c = Coordinator(db=db, log=tmp_path / "c.log", admin_token=None)
    with running(c), c.admin(supplied) as admin:
        network = admin.get("/api/v1/network").json()
    assert network == {
        "name": "default",
        "overlay_cidr": "100.64.0.0/24",
        "p2p": "off",
        "listen_port": 51820,
        "mtu": 1420,
        "auto_approve": [],
        "alias_pool": None,
    }


def test_init_refuses_a_bad_overlay_with_the_prefix_meant(tmp_path: Path) -> None:
    out = init(tmp_path / "c.db", "--overlay", "100.96.0.1/16")
    assert out.returncode == 2
    assert "did you mean 100.96.0.0/16" in out.stderr
    assert not (tmp_path / "c.db").exists()


def test_serving_an_uninitialised_database_without_a_token_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    env = {k: v for k, v in os.environ.items() if k != "WGMESH_ADMIN_TOKEN"}
    out = subprocess.run(
        coordinator_command(db, "--listen", "127.0.0.1:1"),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 1
    assert "not initialised" in out.stderr
    assert "Traceback" not in out.stderr


def test_init_refuses_a_short_admin_token_and_a_missing_directory(tmp_path: Path) -> None:
    short = init(tmp_path / "c.db", admin_token="short")
    assert short.returncode == 2
    assert "at least 16 characters" in short.stderr
    assert not (tmp_path / "c.db").exists(), "a refused init must not leave a half-made database"
    missing = init(tmp_path / "no-such-dir" / "c.db")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    assert "Traceback" not in short.stderr + missing.stderr
