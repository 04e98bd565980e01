"""The coordinator's TLS identity as agents meet it (issue 15): tokens carry its pin and URLs, the agent pins
it on first contact, refuses another key with one line, and switches only to a key announced in advance;
plain HTTP only on loopback, and the dashboard cookie's Secure flag behind a TLS-terminating proxy."""

from __future__ import annotations

import json
import logging
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from agent_harness import memory_agent
from coordinator_harness import (
    ADMIN_TOKEN,
    Coordinator,
    coordinator_command,
    create_token,
    free_port,
    running,
)

from wgmesh.agent.agent import Agent
from wgmesh.agent.client import CoordinatorClient
from wgmesh.agent.config import AgentConfig
from wgmesh.coordinator import identity
from wgmesh.errors import IdentityError
from wgmesh.join_token import JoinToken, with_identity
from wgmesh.pins import Pin

REAL_PROCESS = True


@contextmanager
def agent(url: str, token: str | None, state_dir: Path) -> Iterator[Agent]:
    cfg = AgentConfig(coordinator=url, name="gw-pin", token=token, state_dir=state_dir, metrics_listen="off")
    with memory_agent(cfg) as made:
        made.dataplane.up()
        yield made


def follow(made: Agent, url: str) -> None:
    """Point the agent at a restarted coordinator (a new port), with the trust it holds."""
    made.client.close()
    made.client = CoordinatorClient(url, made.client.credential, tls=made.trust.context())
    made.follower.client = made.client


def pin_file(state_dir: Path) -> dict[str, str | None]:
    path = state_dir / "coordinator-pin.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return dict(json.loads(path.read_text()))


def test_a_token_carries_the_pin_and_the_urls_agents_use(tmp_path: Path) -> None:
    extra = ("--public-url", "https://gw.example:8443", "--public-url", "https://198.51.100.7:8443")
    with (
        running(Coordinator(db=tmp_path / "c.db", log=tmp_path / "c.log", extra=extra)) as c,
        c.admin() as admin,
    ):
        token = JoinToken.parse(create_token(admin)["token"])
    assert token.pin == c.pin
    assert token.urls == ("https://gw.example:8443", "https://198.51.100.7:8443")
    assert token.secret.startswith("wgt_")


def test_the_agent_pins_on_first_contact_and_sends_only_the_secret(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    with coordinator.admin() as admin:
        token = create_token(admin)["token"]
    parsed = JoinToken.parse(token)
    assert parsed.urls == (coordinator.url,)  # no --public-url: the URL the token was asked at
    with agent(coordinator.url, token, tmp_path) as made:
        assert not (tmp_path / "coordinator-pin.json").exists()
        made.enroll()
        assert made.token_secret == parsed.secret
    assert pin_file(tmp_path) == {"pin": str(coordinator.pin), "next": None}


def test_a_token_with_a_wrong_pin_fails_enrollment_with_one_line(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    with coordinator.admin() as admin:
        real = JoinToken.parse(create_token(admin)["token"])
        before = admin.get("/api/v1/nodes").json()["nodes"]
        wrong = with_identity(real.secret, identity.generate().pin, [coordinator.url])
        with agent(coordinator.url, wrong, tmp_path) as made, pytest.raises(IdentityError) as caught:
            made.enroll()
        assert admin.get("/api/v1/nodes").json()["nodes"] == before  # the key never reached it
    message = caught.value.message
    assert "\n" not in message
    assert f"refusing coordinator {coordinator.url}: it presented key {coordinator.pin}" in message
    assert not (tmp_path / "coordinator-pin.json").exists()


def replace_identity(db: Path) -> Pin:
    """What a coordinator that is not ours presents: any other key (here, written over the registry's)."""
    other = identity.generate()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE registry SET tls_key = ?, tls_cert = ?", (other.key_pem, other.cert_pem))
    return other.pin


def rotate(db: Path, step: str) -> Pin:
    done = subprocess.run(
        coordinator_command(db, "rotate-identity", step),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return Pin.parse(done.stdout.strip().rsplit(" ", 1)[-1])


def test_rotation_to_an_announced_key_is_accepted_and_to_any_other_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db, state_dir = tmp_path / "c.db", tmp_path / "state"
    c = Coordinator(db=db, log=tmp_path / "c.log")
    with running(c), c.admin() as admin:
        token = create_token(admin)["token"]
        first = c.pin
        with agent(c.url, token, state_dir) as made:
            made.client.credential = made.enroll().credential
            staged = rotate(db, "--stage")
            assert made.follower.poll_once(wait=5) is True  # the version moved: a netmap announcing it
            assert made.netmap is not None and made.netmap.coordinator_next_pin == str(staged)
            assert pin_file(state_dir) == {"pin": str(first), "next": str(staged)}
            # Activated, served from the coordinator's next start: the agent follows the announced key.
            assert rotate(db, "--activate") == staged
            c.stop()
            c.start()
            assert c.pin == staged
            follow(made, c.url)
            with caplog.at_level(logging.WARNING, logger="wgmesh.agent"):
                made.follower.poll_once(wait=0)
            assert "coordinator key rotated to the announced one" in caplog.text
            assert pin_file(state_dir) == {"pin": str(staged), "next": None}
            # A key nobody announced: refused, the pin stays.
            c.stop()
            intruder = replace_identity(db)
            c.start()
            follow(made, c.url)
            with pytest.raises(IdentityError, match=f"presented key {intruder}, not {staged}"):
                made.follower.poll_once(wait=0)
            assert pin_file(state_dir) == {"pin": str(staged), "next": None}
            # ... and the old key, once replaced, is no longer accepted either.
            assert made.trust.accepted() == [staged]


def test_plain_http_is_refused_unless_on_loopback(tmp_path: Path) -> None:
    env = {"WGMESH_ADMIN_TOKEN": ADMIN_TOKEN, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        coordinator_command(tmp_path / "c.db", "--listen", f"0.0.0.0:{free_port()}", "--insecure-http"),
        capture_output=True,
        check=False,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "--insecure-http is only for a TLS-terminating proxy on this host" in done.stderr


def login_cookie(c: Coordinator, headers: dict[str, str]) -> str:
    with c.anonymous() as anon:
        r = anon.post("/api/v1/session", json={"token": ADMIN_TOKEN}, headers=headers)
    assert r.status_code == 201, r.text
    return r.headers["set-cookie"].lower()


def test_the_session_cookie_is_secure_under_https_and_behind_a_trusted_proxy_that_says_https(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    assert "; secure" in login_cookie(coordinator, {})
    proxied = ("--insecure-http", "--trusted-proxy", "127.0.0.1/32")
    with running(Coordinator(db=tmp_path / "p.db", log=tmp_path / "p.log", extra=proxied)) as behind:
        assert behind.url.startswith("http://")
        assert "; secure" in login_cookie(behind, {"X-Forwarded-Proto": "https"})
        assert "; secure" not in login_cookie(behind, {"X-Forwarded-Proto": "http"})
        assert "; secure" not in login_cookie(behind, {})
    # the header counts only from a trusted proxy
    plain = ("--insecure-http",)
    with running(Coordinator(db=tmp_path / "q.db", log=tmp_path / "q.log", extra=plain)) as direct:
        assert "; secure" not in login_cookie(direct, {"X-Forwarded-Proto": "https"})
