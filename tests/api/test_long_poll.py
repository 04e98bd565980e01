"""GET /api/v1/netmap?since=V&wait=S: held until a change (answered within 0.5 s of it) or 304 after S."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from coordinator_harness import (
    WAKE_BUDGET,
    Api,
    Enrolled,
    assert_error,
    create_token,
    enroll,
    netmap,
    version,
)

BACKENDS = ("sqlite", "postgresql")
"""Run on both databases, through the same code (tests/api/conftest.py)."""


class Poll(threading.Thread):
    """One long-poll in the background; records the answer and the monotonic time it arrived."""

    def __init__(self, coordinator: Api, node: Enrolled, since: int, wait: float) -> None:
        super().__init__(daemon=True)
        self.client = coordinator.node(node.credential)
        self.params = {"since": since, "wait": wait}
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self.answered_at = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        try:
            with self.client:
                self.response = self.client.get("/api/v1/netmap", params=self.params, timeout=30)
        except BaseException as exc:
            self.error = exc
        finally:
            self.answered_at = time.monotonic()
            self.done.set()

    def result(self, timeout: float) -> httpx.Response:
        assert self.done.wait(timeout), "the long-poll did not answer"
        if self.error is not None:
            raise self.error
        assert self.response is not None
        return self.response


@pytest.fixture(scope="module")
def mesh(coordinator: Api, admin: httpx.Client) -> dict[str, Enrolled]:
    token = create_token(admin, reusable=True, allow_subnets=["10.0.0.0/8"])["token"]
    with coordinator.anonymous() as anon:
        return {name: enroll(anon, token, name) for name in ("gw-a", "gw-b")}


def held(poll: Poll, seconds: float = 0.3) -> bool:
    """True if the poll is still waiting after `seconds` (a bounded check, not a sleep)."""
    return not poll.done.wait(seconds)


def current(coordinator: Api, node: Enrolled) -> dict[str, Any]:
    return netmap(coordinator, node)


def test_a_held_request_returns_within_half_a_second_of_a_change(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    since = current(coordinator, mesh["gw-a"])["version"]
    poll = Poll(coordinator, mesh["gw-a"], since, wait=10)
    poll.start()
    assert held(poll), "the request was answered before anything changed"
    changed_at = time.monotonic()
    r = admin.patch("/api/v1/nodes/gw-b", json={"subnets": ["10.2.0.0/16"]})
    assert r.status_code == 200, r.text
    answer = poll.result(timeout=5)
    assert answer.status_code == 200, answer.text
    delay = poll.answered_at - changed_at
    assert delay < WAKE_BUDGET, f"answered {delay:.3f} s after the change"
    body = answer.json()
    assert body["version"] > since
    assert "10.2.0.0/16" in {ip for p in body["peers"] for ip in p["allowed_ips"]}


def test_a_status_report_from_another_node_wakes_the_waiters(
    coordinator: Api, mesh: dict[str, Enrolled]
) -> None:
    since = current(coordinator, mesh["gw-a"])["version"]
    poll = Poll(coordinator, mesh["gw-a"], since, wait=10)
    poll.start()
    assert held(poll)
    changed_at = time.monotonic()
    with coordinator.node(mesh["gw-b"].credential) as b:
        assert b.post("/api/v1/status", json={"endpoints": ["198.51.100.2:51820"]}).json()["changed"]
    answer = poll.result(timeout=5)
    assert answer.status_code == 200
    assert poll.answered_at - changed_at < WAKE_BUDGET
    (peer,) = answer.json()["peers"]
    assert peer["endpoints"][0] == "198.51.100.2:51820"


def test_a_node_joining_wakes_the_waiters(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    since = current(coordinator, mesh["gw-a"])["version"]
    poll = Poll(coordinator, mesh["gw-a"], since, wait=10)
    poll.start()
    assert held(poll)
    token = create_token(admin)["token"]
    changed_at = time.monotonic()
    with coordinator.anonymous() as anon:
        enroll(anon, token, "gw-new")
    answer = poll.result(timeout=5)
    assert answer.status_code == 200
    assert changed_at <= poll.answered_at < changed_at + WAKE_BUDGET
    assert "gw-new" in {p["name"] for p in answer.json()["peers"]}


def test_many_waiters_all_wake_on_one_change(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    since = current(coordinator, mesh["gw-a"])["version"]
    polls = [Poll(coordinator, mesh[n], since, wait=10) for n in ("gw-a", "gw-b") for _ in range(5)]
    for p in polls:
        p.start()
    assert held(polls[-1])
    assert not any(p.done.is_set() for p in polls)
    changed_at = time.monotonic()
    assert admin.patch("/api/v1/nodes/gw-b", json={"p2p": "off"}).status_code == 200
    for p in polls:
        assert p.result(timeout=5).status_code == 200
        assert changed_at <= p.answered_at < changed_at + WAKE_BUDGET


def test_with_no_change_the_answer_is_304_after_wait(coordinator: Api, mesh: dict[str, Enrolled]) -> None:
    since = current(coordinator, mesh["gw-a"])["version"]
    with coordinator.node(mesh["gw-a"].credential) as client:
        started = time.monotonic()
        r = client.get("/api/v1/netmap", params={"since": since, "wait": 1})
        elapsed = time.monotonic() - started
    assert r.status_code == 304
    assert r.content == b""
    assert 0.95 <= elapsed < 1.5, elapsed


def test_an_older_version_is_answered_at_once(coordinator: Api, mesh: dict[str, Enrolled]) -> None:
    latest = current(coordinator, mesh["gw-a"])["version"]
    with coordinator.node(mesh["gw-a"].credential) as client:
        for since in (latest - 1, 0, -1):
            started = time.monotonic()
            r = client.get("/api/v1/netmap", params={"since": since, "wait": 10})
            assert time.monotonic() - started < WAKE_BUDGET
            assert r.status_code == 200
            assert r.json()["version"] == latest


def test_without_wait_an_unchanged_netmap_is_304_at_once(coordinator: Api, mesh: dict[str, Enrolled]) -> None:
    with coordinator.node(mesh["gw-a"].credential) as client:
        v = version(client)
        started = time.monotonic()
        assert client.get("/api/v1/netmap", params={"since": v}).status_code == 304
        assert time.monotonic() - started < WAKE_BUDGET


@pytest.mark.parametrize(
    ("param", "value"), [("since", "abc"), ("wait", "soon"), ("wait", "nan"), ("wait", "inf")]
)
def test_bad_query_parameters_are_422(
    coordinator: Api, mesh: dict[str, Enrolled], param: str, value: str
) -> None:
    with coordinator.node(mesh["gw-a"].credential) as client:
        assert_error(client.get("/api/v1/netmap", params={param: value}), 422, "invalid_query")


def test_long_poll_needs_a_node_credential(coordinator: Api) -> None:
    with coordinator.anonymous() as anon:
        assert_error(anon.get("/api/v1/netmap", params={"since": 0, "wait": 5}), 401)
    with coordinator.admin() as admin:  # an admin token is not a node credential
        assert_error(admin.get("/api/v1/netmap", params={"since": 0, "wait": 5}), 401)


def test_a_node_stating_the_same_subnets_again_wakes_nobody(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    """Every agent states its subnets at each start: only a different set may bump the version."""
    with coordinator.node(mesh["gw-b"].credential) as b:
        first = b.put("/api/v1/node/subnets", json={"subnets": ["10.12.0.0/16", "10.13.0.0/16"]})
        assert first.status_code == 200, first.text
        before = version(admin)
        since = current(coordinator, mesh["gw-a"])["version"]
        poll = Poll(coordinator, mesh["gw-a"], since, wait=10)
        poll.start()
        # The same set, in another order (rows keep their place, so nothing a peer sees changes).
        again = b.put("/api/v1/node/subnets", json={"subnets": ["10.13.0.0/16", "10.12.0.0/16"]})
        assert again.status_code == 200, again.text
        assert again.json() == first.json()  # the verdicts are still answered
        assert held(poll, 1.0), "an unchanged subnet list woke a long-poll"
        assert version(admin) == before
        changed_at = time.monotonic()
        other = b.put("/api/v1/node/subnets", json={"subnets": ["10.12.0.0/16"]})
        assert other.status_code == 200, other.text
    assert version(admin) == before + 1
    answer = poll.result(timeout=5)
    assert answer.status_code == 200
    assert poll.answered_at - changed_at < WAKE_BUDGET
    allowed = {ip for p in answer.json()["peers"] for ip in p["allowed_ips"]}
    assert "10.12.0.0/16" in allowed and "10.13.0.0/16" not in allowed


def test_a_node_stating_no_subnets_withdraws_them_all(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    """An agent started without --advertise states an empty list: whatever the node advertised goes,
    one set by an admin too (the registry cannot tell them apart)."""
    assert admin.patch("/api/v1/nodes/gw-b", json={"subnets": ["10.14.0.0/16"]}).status_code == 200
    before = version(admin)
    with coordinator.node(mesh["gw-b"].credential) as b:
        r = b.put("/api/v1/node/subnets", json={"subnets": []})
        assert r.status_code == 200, r.text
        assert r.json()["routes"] == []
        assert version(admin) == before + 1
        assert b.put("/api/v1/node/subnets", json={"subnets": []}).status_code == 200
    assert version(admin) == before + 1
    assert admin.get("/api/v1/nodes/gw-b").json()["subnets"] == []
    assert all(
        p["allowed_ips"] == [f"{p['overlay_ip']}/32"] for p in current(coordinator, mesh["gw-a"])["peers"]
    )
