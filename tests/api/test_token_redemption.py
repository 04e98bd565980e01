"""Enrollment tokens: one-time tokens are redeemed exactly once, even by parallel requests; expired,
revoked and used tokens are refused and change nothing."""

from __future__ import annotations

import ipaddress
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
from coordinator_harness import (
    Api,
    assert_error,
    create_token,
    enroll,
    enroll_body,
    unchanged,
    wait_until,
)

BACKENDS = ("sqlite", "postgresql")
"""Run on both databases, through the same code (tests/api/conftest.py)."""

PARALLEL = 10


def race(coordinator: Api, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST every enrollment at the same moment, one client (connection) each."""
    barrier = threading.Barrier(len(bodies))
    clients = [coordinator.anonymous() for _ in bodies]
    for c in clients:  # connect first, so that the requests themselves start together
        c.get("/healthz")

    def one(i: int) -> httpx.Response:
        barrier.wait(timeout=10)
        return clients[i].post("/api/v1/enroll", json=bodies[i])

    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            return list(pool.map(one, range(len(bodies))))
    finally:
        for c in clients:
            c.close()


def node_names(admin: httpx.Client) -> list[str]:
    return [n["name"] for n in admin.get("/api/v1/nodes").json()["nodes"]]


def token_info(admin: httpx.Client, token_id: int) -> dict[str, Any]:
    (found,) = [t for t in admin.get("/api/v1/tokens").json()["tokens"] if t["id"] == token_id]
    return dict(found)


def test_parallel_redemptions_of_a_one_time_token_let_exactly_one_through(
    coordinator: Api, admin: httpx.Client
) -> None:
    for round_ in range(3):
        token = create_token(admin)
        names = [f"race{round_}-{i}" for i in range(PARALLEL)]
        answers = race(coordinator, [enroll_body(token["token"], n) for n in names])
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [201] + [401] * (PARALLEL - 1), [r.text for r in answers]
        for r in answers:
            if r.status_code == 401:
                assert_error(r, 401, "token_used")
        (winner,) = [n for n, r in zip(names, answers, strict=True) if r.status_code == 201]
        assert [n for n in node_names(admin) if n.startswith(f"race{round_}-")] == [winner]
        assert token_info(admin, token["id"])["uses"] == 1


def test_parallel_redemptions_of_a_reusable_token_get_distinct_addresses(
    coordinator: Api, admin: httpx.Client
) -> None:
    token = create_token(admin, reusable=True)
    names = [f"herd-{i}" for i in range(PARALLEL)]
    answers = race(coordinator, [enroll_body(token["token"], n) for n in names])
    assert [r.status_code for r in answers] == [201] * PARALLEL, [r.text for r in answers]
    nodes = [n for n in admin.get("/api/v1/nodes").json()["nodes"] if n["name"].startswith("herd-")]
    addresses = {ipaddress.ip_address(n["overlay_ip"]) for n in nodes}
    assert len(addresses) == PARALLEL
    assert all(a in ipaddress.ip_network("100.96.0.0/16") for a in addresses)
    assert len({r.json()["node_id"] for r in answers}) == PARALLEL
    assert token_info(admin, token["id"])["uses"] == PARALLEL


def test_a_used_one_time_token_is_refused(coordinator: Api, admin: httpx.Client) -> None:
    token = create_token(admin)
    with coordinator.anonymous() as anon:
        enroll(anon, token["token"], "once")
        with unchanged(admin):
            assert_error(
                anon.post("/api/v1/enroll", json=enroll_body(token["token"], "twice")), 401, "token_used"
            )
    assert "twice" not in node_names(admin)


def test_a_revoked_token_is_refused(coordinator: Api, admin: httpx.Client) -> None:
    token = create_token(admin, reusable=True)
    r = admin.delete(f"/api/v1/tokens/{token['id']}")
    assert r.status_code == 200, r.text
    assert r.json()["revoked"] is True
    assert admin.delete(f"/api/v1/tokens/{token['id']}").status_code == 200  # twice is harmless
    with coordinator.anonymous() as anon, unchanged(admin):
        assert_error(
            anon.post("/api/v1/enroll", json=enroll_body(token["token"], "revoked")), 401, "token_revoked"
        )
    assert token_info(admin, token["id"])["uses"] == 0


def test_an_expired_token_is_refused(coordinator: Api, admin: httpx.Client) -> None:
    token = create_token(admin, reusable=True, expires_in=1)
    expires_at = datetime.fromisoformat(token["expires_at"]).timestamp()
    wait_until(lambda: time.time() > expires_at + 0.05, timeout=5, what="the token to expire")
    with coordinator.anonymous() as anon, unchanged(admin):
        assert_error(
            anon.post("/api/v1/enroll", json=enroll_body(token["token"], "late")), 401, "token_expired"
        )
    assert token_info(admin, token["id"])["uses"] == 0


def test_unknown_and_malformed_tokens_are_refused(coordinator: Api, admin: httpx.Client) -> None:
    real = create_token(admin)
    forged = real["token"][:-4] + ("AAAA" if not real["token"].endswith("AAAA") else "BBBB")
    with coordinator.anonymous() as anon, unchanged(admin):
        for token in (
            forged,
            "wgt_999999.abcdefghijklmnopqrstuvwxyz",
            "wgt_1",
            "nonsense",
            "wgn_1.abcdefghijklmnopqrstuvwxyz",
        ):
            assert_error(anon.post("/api/v1/enroll", json=enroll_body(token, "forger")), 401, "invalid_token")


def test_a_refused_enrollment_does_not_use_up_the_token(coordinator: Api, admin: httpx.Client) -> None:
    token = create_token(admin)
    with coordinator.anonymous() as anon:
        with unchanged(admin):
            bad = enroll_body(token["token"], "keeper", subnets=["100.96.1.0/24"])
            assert_error(anon.post("/api/v1/enroll", json=bad), 422)
        enroll(anon, token["token"], "keeper")  # the token still works once
    assert token_info(admin, token["id"])["uses"] == 1


def test_token_admin_errors(admin: httpx.Client) -> None:
    with unchanged(admin):
        assert_error(admin.delete("/api/v1/tokens/424242"), 404, "unknown_token")
        assert_error(admin.delete("/api/v1/tokens/99999999999999999999999"), 404, "unknown_token")
        assert_error(admin.delete("/api/v1/tokens/abc"), 422, "invalid_token_id")
        assert_error(admin.delete("/api/v1/tokens/%C2%B2"), 422, "invalid_token_id")  # superscript two
        for body in (
            {"expires_in": 0},
            {"p2p": "maybe"},
            {"reusable": "yes please"},
            {"tags": ["Bad Tag"]},
            {"ttl": 5},
        ):
            assert_error(admin.post("/api/v1/tokens", json=body), 422, "invalid")


def test_a_token_hands_its_tags_and_p2p_policy_to_the_node(coordinator: Api, admin: httpx.Client) -> None:
    token = create_token(admin, tags=["site:fra", "prod"], p2p="off", description="frankfurt")
    assert (token["tags"], token["p2p"], token["description"]) == (["site:fra", "prod"], "off", "frankfurt")
    with coordinator.anonymous() as anon:
        node = enroll(anon, token["token"], "tagged")
    got = admin.get("/api/v1/nodes/tagged").json()
    assert (got["tags"], got["p2p"]) == (["prod", "site:fra"], "off")
    assert node.first_netmap["p2p"] == "off"


def test_the_same_enrollment_again_gets_the_same_node_with_a_new_credential(
    coordinator: Api, admin: httpx.Client
) -> None:
    """An answer lost on the way (issue 17): the agent asks again, maybe through another coordinator.
    Only the very same request gets an answer: same token secret, name and public key, before the node
    ever reported; the credential of the lost answer is retired."""
    token = create_token(admin)
    body = enroll_body(token["token"], "lost-answer")
    with coordinator.anonymous() as anon:
        first = anon.post("/api/v1/enroll", json=body)
        assert first.status_code == 201, first.text
        for other in (
            {**body, "public_key": enroll_body(token["token"], "x")["public_key"]},
            {**body, "name": "lost-answer-2"},
        ):
            with unchanged(admin):
                assert_error(anon.post("/api/v1/enroll", json=other), 401, "token_used")
        again = anon.post("/api/v1/enroll", json=body)
        assert again.status_code == 201, again.text
    assert again.json()["node_id"] == first.json()["node_id"]
    assert again.json()["credential"] != first.json()["credential"]
    assert node_names(admin).count("lost-answer") == 1
    assert token_info(admin, token["id"])["uses"] == 1
    with coordinator.node(first.json()["credential"]) as lost:
        assert_error(lost.get("/api/v1/netmap"), 401, "invalid_credential")
    with coordinator.node(again.json()["credential"]) as node:
        assert node.get("/api/v1/netmap").status_code == 200
        assert node.post("/api/v1/status", json={}).status_code == 200
    entries = admin.get("/api/v1/audit").json()["entries"]
    assert [e["target"] for e in entries if e["action"] == "node.enroll_again"] == ["lost-answer"]
    # Once the node has reported, its agent holds its credential: the token is spent for good.
    with coordinator.anonymous() as anon, unchanged(admin):
        assert_error(anon.post("/api/v1/enroll", json=body), 401, "token_used")


def test_a_reusable_token_never_enrolls_the_same_node_again(coordinator: Api, admin: httpx.Client) -> None:
    """A reusable token is shared by a fleet whose members see the node's name and key in their netmaps: a
    "retry" by one of them must not take the node's credential."""
    token = create_token(admin, reusable=True)
    body = enroll_body(token["token"], "fleet-member")
    with coordinator.anonymous() as anon:
        first = anon.post("/api/v1/enroll", json=body)
        assert first.status_code == 201, first.text
        with unchanged(admin):
            assert_error(anon.post("/api/v1/enroll", json=body), 409, "duplicate_name")
    with coordinator.node(first.json()["credential"]) as node:
        assert node.get("/api/v1/netmap").status_code == 200


def test_a_replacing_token_cannot_be_reusable(admin: httpx.Client) -> None:
    created = admin.post(
        "/api/v1/nodes", json={"name": "replace-target", "public_key": enroll_body("x", "y")["public_key"]}
    )
    assert created.status_code == 201, created.text
    with unchanged(admin):
        r = admin.post("/api/v1/tokens", json={"replaces": "replace-target", "reusable": True})
        assert_error(r, 422)
