"""A burst of versions is paced per agent (coordinator/pacing.py): an agent polling through it gets a few
answers, not one per version, and ends holding the last version."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from coordinator_harness import WAKE_BUDGET, Api, Enrolled, create_token, enroll, netmap, version
from inprocess_harness import InProcessCoordinator

from wgmesh.coordinator.pacing import BURST

VERSIONS = 30
GAP = 1.0
"""The test's gap with one agent waiting (the default is 1.5 ms per waiter: nothing to see with two)."""


class Follower(threading.Thread):
    """An agent's poll loop: long-polls from the version it holds, recording every answer's version."""

    def __init__(self, coordinator: Api, node: Enrolled, since: int) -> None:
        super().__init__(daemon=True)
        self.client = coordinator.node(node.credential)
        self.since = since
        self.answers: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.client:
                while not self.stop.is_set():
                    r = self.client.get("/api/v1/netmap", params={"since": self.since, "wait": 2}, timeout=30)
                    if r.status_code == 200:
                        self.since = r.json()["version"]
                        self.answers.append((time.monotonic(), self.since))
                    else:
                        assert r.status_code == 304, r.text
        except BaseException as exc:
            self.error = exc


def holds(follower: Follower, version: int) -> None:
    """Wait until the follower holds `version` (30 s: a ceiling, not a pace; the condition ends it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not follower.answers or follower.answers[-1][1] < version):
        assert follower.error is None, follower.error
        time.sleep(0.02)
    assert follower.answers and follower.answers[-1][1] >= version, (
        f"the follower never got version {version}"
    )


@pytest.fixture
def paced(coordinator: Api) -> Iterator[float]:
    assert isinstance(coordinator, InProcessCoordinator)
    pacer = coordinator.context().pacer
    default, pacer.share = pacer.share, GAP
    yield GAP
    pacer.share = default


def test_a_burst_of_versions_costs_an_agent_a_few_answers(
    coordinator: Api, admin: httpx.Client, paced: float
) -> None:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.anonymous() as anon:
        follower_node = enroll(anon, token, "follower")
        other = enroll(anon, token, "other")
    follower = Follower(coordinator, follower_node, netmap(coordinator, follower_node)["version"])
    follower.start()
    try:
        first = version(admin)
        began = time.monotonic()
        with coordinator.node(other.credential) as node:
            for i in range(VERSIONS):  # each report moves the endpoint: a version each
                r = node.post("/api/v1/status", json={"endpoints": [f"198.51.100.{i + 1}:51820"]})
                assert r.status_code == 200 and r.json()["changed"], r.text
        ended = time.monotonic()
        last = version(admin)
        burst = ended - began
        assert last - first >= VERSIONS
        holds(follower, last)
        answers = len(follower.answers)
        # Once the versions are a gap old there is no burst: a change then reaches the follower at once,
        # though the burst emptied its bucket.
        while time.monotonic() < ended + paced * 1.2:
            time.sleep(0.05)
        with coordinator.node(other.credential) as node:
            changed_at = time.monotonic()
            assert node.post("/api/v1/status", json={"endpoints": ["198.51.100.200:51820"]}).json()["changed"]
        holds(follower, last + 1)
        after = follower.answers[answers:]
        assert after[0][0] - changed_at < WAKE_BUDGET, (
            f"answered {after[0][0] - changed_at:.2f} s after a lone change"
        )
    finally:
        follower.stop.set()
        follower.join(timeout=10)
    assert follower.error is None, follower.error
    during = [v for _, v in follower.answers[:answers]]
    # Its burst at once, then one answer per gap (one agent waits: the gap is GAP).
    ceiling = BURST + burst / paced + 2
    print(f"{len(during)} answers for {last - first} versions posted in {burst:.2f} s")
    assert len(during) <= ceiling, f"{len(during)} answers for {last - first} versions in {burst:.2f} s"
    assert len(during) < last - first, "every version was answered on its own"
    paced_at = [at for at, _ in follower.answers[int(BURST) - 1 : answers]]
    gaps = [b - a for a, b in itertools.pairwise(paced_at)]
    assert all(g >= paced * 0.9 for g in gaps), f"answers closer than the gap: {gaps}"
