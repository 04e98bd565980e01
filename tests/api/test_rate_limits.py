"""Rate limits per source address (docs/security.md, "Rate limits"): enrollments, dashboard logins and
failed credentials answer 429 with `Retry-After` once an address has spent its budget, other addresses and
/healthz are untouched, `--trusted-proxy` decides the address, and the agent's client reads the wait."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from coordinator_harness import Coordinator, assert_error, create_token, enroll_body, running
from inprocess_harness import InProcessCoordinator

from wgmesh import keys, trust
from wgmesh.agent.client import CoordinatorClient
from wgmesh.errors import RateLimitedError
from wgmesh.models import EnrollRequest

# Small budgets refilled slowly (one token per 1000 s), so nothing refills during a test.
LIMITS = (
    "--rate-limit",
    "enroll=3/0.001",
    "--rate-limit",
    "login=2/0.001",
    "--rate-limit",
    "failures=4/0.001",
)
PROXY = ("--trusted-proxy", "127.0.0.1/32")


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[InProcessCoordinator]:
    with running(
        InProcessCoordinator(db=tmp_path / "c.db", log=tmp_path / "c.log", extra=(*LIMITS, *PROXY))
    ) as c:
        yield c


def from_(address: str) -> dict[str, str]:
    """Headers that make a request come from `address` behind the trusted proxy (127.0.0.1)."""
    return {"x-forwarded-for": address}


def assert_limited(response: httpx.Response, what: str) -> None:
    error = assert_error(response, 429, "rate_limited")
    assert what in error["message"]
    assert response.headers["retry-after"] == "1000"


def test_enrollments_past_the_burst_get_429_and_other_addresses_do_not(limited: InProcessCoordinator) -> None:
    with limited.admin() as admin:
        token = create_token(admin, reusable=True)["token"]
    with limited.anonymous() as anon:
        for i in range(3):
            r = anon.post("/api/v1/enroll", json=enroll_body(token, f"rl-{i}"), headers=from_("198.51.100.1"))
            assert r.status_code == 201, r.text
        refused = anon.post("/api/v1/enroll", json=enroll_body(token, "rl-x"), headers=from_("198.51.100.1"))
        assert_limited(refused, "too many enrollments from 198.51.100.1")
        other = anon.post("/api/v1/enroll", json=enroll_body(token, "rl-y"), headers=from_("198.51.100.2"))
        assert other.status_code == 201, other.text
        assert anon.get("/healthz", headers=from_("198.51.100.1")).status_code == 200
    with limited.admin() as admin:
        names = {n["name"] for n in admin.get("/api/v1/nodes").json()["nodes"]}
    assert "rl-x" not in names and "rl-y" in names  # a refused enrollment did nothing


def test_logins_past_the_burst_get_429_good_token_or_not(limited: InProcessCoordinator) -> None:
    with limited.anonymous() as anon:
        for _ in range(2):
            r = anon.post(
                "/api/v1/session", json={"token": limited.admin_token}, headers=from_("198.51.100.3")
            )
            assert r.status_code == 201, r.text
        refused = anon.post(
            "/api/v1/session", json={"token": limited.admin_token}, headers=from_("198.51.100.3")
        )
    assert_limited(refused, "too many logins")
    assert "set-cookie" not in refused.headers


def test_failed_credentials_lock_the_address_out_of_the_api(limited: InProcessCoordinator) -> None:
    attacker, bystander = from_("203.0.113.5"), from_("203.0.113.6")
    with limited.admin("wga_guess") as guesser, limited.admin() as admin:
        for _ in range(4):
            assert_error(guesser.get("/api/v1/nodes", headers=attacker), 401)
        assert_limited(guesser.get("/api/v1/nodes", headers=attacker), "too many failed credentials")
        # every API request from that address now, the right token included: no guessing at speed
        assert_limited(admin.get("/api/v1/nodes", headers=attacker), "too many failed credentials")
        assert admin.get("/api/v1/nodes", headers=bystander).status_code == 200
        assert admin.get("/api/v1/nodes", headers=bystander).status_code == 200  # successes cost nothing


def test_without_a_trusted_proxy_forwarded_for_does_not_pick_the_bucket(tmp_path: Path) -> None:
    coordinator = InProcessCoordinator(db=tmp_path / "c.db", log=tmp_path / "c.log", extra=LIMITS)
    with running(coordinator), coordinator.admin("wga_guess") as guesser:
        for i in range(4):
            assert_error(guesser.get("/api/v1/nodes", headers=from_(f"192.0.2.{i}")), 401)
        # a forged header per request changes nothing: the peer address (127.0.0.1) was charged
        assert_limited(guesser.get("/api/v1/nodes", headers=from_("192.0.2.99")), "from 127.0.0.1")
    assert "rate limit reached" in coordinator.log.read_text()


def test_the_agents_client_reads_retry_after(tmp_path: Path) -> None:
    with running(Coordinator(db=tmp_path / "c.db", log=tmp_path / "c.log", extra=LIMITS)) as c:
        with c.admin() as admin:
            token = create_token(admin, reusable=True)["token"]
        pin = c.pin
        client = CoordinatorClient(c.url, None, tls=trust.pinned(lambda: [pin]))
        try:
            for i in range(3):
                req = EnrollRequest(
                    token=token, name=f"agent-{i}", public_key=keys.generate_keypair().public_key
                )
                client.enroll(req)
            with pytest.raises(RateLimitedError) as refused:
                client.enroll(req.model_copy(update={"name": "agent-x"}))
        finally:
            client.close()
    assert refused.value.retry_after == 1000.0
    assert refused.value.status == 429
