"""GET /api/v1/node/relay: relays announced by flags, and a ticket signed with the key `relay-key` prints."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coordinator_harness import (
    ADMIN_TOKEN,
    Api,
    Coordinator,
    assert_error,
    coordinator_command,
    create_token,
    enroll,
    free_port,
    running,
)
from inprocess_harness import InProcessCoordinator

from wgmesh.pins import Pin
from wgmesh.relay import protocol, tickets
from wgmesh.relay.identity import pinned_client_context, refusal

BACKENDS = ("sqlite", "postgresql")
"""Run on both databases, through the same code (tests/api/conftest.py); the tests that start their own
coordinator process run on SQLite alone."""

PIN = "sha256:" + "Ab" * 32
RELAYS = ["tcp://198.18.0.1:8443", "hub2=tls://198.18.0.2:443", f"hub3=tls://198.18.0.3:443#{PIN}"]


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory, database: str | None) -> Iterator[InProcessCoordinator]:
    tmp = tmp_path_factory.mktemp("relayed")
    extra: list[str] = []
    for relay in RELAYS:
        extra += ["--announce-relay", relay]
    with running(
        InProcessCoordinator(db=tmp / "c.db", log=tmp / "c.log", extra=extra, database=database)
    ) as c:
        yield c


def relay_key(db: Path | str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "WGMESH_ADMIN_TOKEN": ADMIN_TOKEN}
    return subprocess.run(
        coordinator_command(db, "relay-key"), capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_grant_lists_relays_and_carries_a_ticket_relays_accept(relayed: Api) -> None:
    with relayed.admin() as admin, relayed.anonymous() as anon:
        node = enroll(anon, create_token(admin)["token"], "gw-a")
    with relayed.node(node.credential) as client:
        r = client.get("/api/v1/node/relay")
    assert r.status_code == 200, r.text
    grant = r.json()
    assert grant["relays"] == [
        {"id": "198.18.0.1:8443", "url": "tcp://198.18.0.1:8443", "pin": None},
        {"id": "hub2", "url": "tls://198.18.0.2:443", "pin": None},
        {"id": "hub3", "url": "tls://198.18.0.3:443", "pin": PIN.lower()},  # one spelling on the wire
    ]
    printed = relay_key(relayed.db_url)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == grant["coordinator_key"]
    key = tickets.load_public_key(grant["coordinator_key"])
    claims = tickets.verify_ticket(key, grant["ticket"], time.time(), node.node_id, relay_id="hub3")
    assert claims.node_id == node.node_id
    assert 23 * 3600 < claims.expires_at - time.time() <= 24 * 3600
    # It names exactly the announced relays: another relay refuses it (issue 16).
    assert claims.relays == ("198.18.0.1:8443", "hub2", "hub3")
    with pytest.raises(tickets.TicketWrongAudienceError):
        tickets.verify_ticket(key, grant["ticket"], time.time(), node.node_id, relay_id="hub4")
    # Another node's hello cannot reuse it.
    with pytest.raises(tickets.TicketWrongNodeError):
        tickets.verify_ticket(key, grant["ticket"], time.time(), node.node_id + 1, relay_id="hub3")


def test_grant_needs_a_node_credential(relayed: Api) -> None:
    with relayed.anonymous() as anon:
        assert_error(anon.get("/api/v1/node/relay"), 401)
    with relayed.admin() as admin:
        assert_error(admin.get("/api/v1/node/relay"), 401)


def test_deleted_node_gets_no_new_ticket(relayed: Api) -> None:
    with relayed.admin() as admin, relayed.anonymous() as anon:
        node = enroll(anon, create_token(admin)["token"], "gw-gone")
        assert admin.delete(f"/api/v1/nodes/{node.node_id}").status_code == 200
    with relayed.node(node.credential) as client:
        assert client.get("/api/v1/node/relay").status_code == 401


def test_key_is_stable_across_restarts_and_shared_by_coordinators(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with running(Coordinator(db=db, log=tmp_path / "c.log")):
        pass
    first, second = relay_key(db), relay_key(db)
    assert first.returncode == 0 and first.stdout == second.stdout
    assert len(tickets.load_public_key(first.stdout.strip()).public_bytes_raw()) == 32


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("udp://198.18.0.1:8443", "must be tcp://HOST:PORT or tls://HOST:PORT"),
        ("tcp://198.18.0.1:70000", "port must be 1-65535"),
        ("tcp://198.18.0.1", "must be tcp://HOST:PORT"),
        (f"tcp://198.18.0.1:8443#{PIN}", "a pin needs tls://"),
        ("tls://198.18.0.1:8443#sha256:12ab", "must be sha256: and 64 hex digits"),
        ("tls://198.18.0.1:8443#md5:" + "ab" * 32, "must start with sha256:"),
    ],
)
def test_bad_relay_flag_is_one_line_exit_2(tmp_path: Path, flag: str, message: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "WGMESH_ADMIN_TOKEN": ADMIN_TOKEN}
    done = subprocess.run(
        coordinator_command(tmp_path / "c.db", "--announce-relay", flag, "--listen", "127.0.0.1:1"),
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_relay_key_on_a_missing_database_is_one_line(tmp_path: Path) -> None:
    done = relay_key(tmp_path / "none.db")
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "not initialised" in done.stderr


def embedded_relay_grant(c: Coordinator, name: str) -> tuple[int, dict[str, Any]]:
    with c.admin() as admin, c.anonymous() as anon:
        node = enroll(anon, create_token(admin)["token"], name)
    with c.node(node.credential) as client:
        return node.node_id, client.get("/api/v1/node/relay").json()


def test_embedded_relay_serves_tls_with_the_announced_pin_and_accepts_the_grants_ticket(
    tmp_path: Path,
) -> None:
    relay_port = free_port()
    extra = ["--relay", f"127.0.0.1:{relay_port}"]
    with running(Coordinator(db=tmp_path / "c.db", log=tmp_path / "c.log", extra=extra)) as c:
        node_id, grant = embedded_relay_grant(c, "gw-e")
        [announced] = grant["relays"]
        assert announced["id"] == f"127.0.0.1:{relay_port}"
        assert announced["url"] == f"tls://127.0.0.1:{relay_port}"
        pin = Pin.parse(announced["pin"])
        with (
            socket.create_connection(("127.0.0.1", relay_port), timeout=5) as raw,
            pinned_client_context().wrap_socket(raw) as sock,
        ):
            assert refusal(sock.getpeercert(binary_form=True), pin) is None  # the key the pin names
            sock.sendall(protocol.encode(protocol.Hello(node_id, grant["ticket"])))
            frames = protocol.FrameDecoder().feed(sock.recv(4096))
        assert isinstance(frames[0], protocol.HelloOk) and frames[0].node_id == node_id
    # The key lives in the registry: a restarted (or another) coordinator presents the same one.
    with running(Coordinator(db=tmp_path / "c.db", log=tmp_path / "c2.log", extra=extra)) as c:
        _, again = embedded_relay_grant(c, "gw-f")
    assert again["relays"][0]["pin"] == announced["pin"]


def test_embedded_relay_serves_plain_tcp_only_when_asked(tmp_path: Path) -> None:
    relay_port = free_port()
    extra = ["--relay", f"127.0.0.1:{relay_port}", "--relay-plain-tcp"]
    with running(Coordinator(db=tmp_path / "c.db", log=tmp_path / "c.log", extra=extra)) as c:
        node_id, grant = embedded_relay_grant(c, "gw-p")
        assert grant["relays"] == [
            {"id": f"127.0.0.1:{relay_port}", "url": f"tcp://127.0.0.1:{relay_port}", "pin": None}
        ]
        with socket.create_connection(("127.0.0.1", relay_port), timeout=5) as sock:
            sock.sendall(protocol.encode(protocol.Hello(node_id, grant["ticket"])))
            frames = protocol.FrameDecoder().feed(sock.recv(4096))
        assert isinstance(frames[0], protocol.HelloOk)


def test_embedded_relay_on_a_taken_port_fails_the_start_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"PATH": "/usr/bin:/bin", "WGMESH_ADMIN_TOKEN": ADMIN_TOKEN}
        done = subprocess.run(
            coordinator_command(
                tmp_path / "c.db", "--listen", f"127.0.0.1:{free_port()}", "--relay", f"127.0.0.1:{port}"
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    assert "address already in use" in done.stderr.strip().splitlines()[-1]
