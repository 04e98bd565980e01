"""An agent with two coordinators of one registry (two real processes on one PostgreSQL database,
issue 17): when the first dies, its long-poll and its reports move to the second at once, a change made
through the second reaches it, and it says which coordinator it follows (local status, status report)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import memory_agent
from coordinator_harness import create_token
from failover_harness import AnswerDropper, Pair, coordinators
from pg_harness import Cluster

from wgmesh.agent.agent import Agent
from wgmesh.agent.config import AgentConfig
from wgmesh.join_token import JoinToken
from wgmesh.lab.timescale import scaled
from wgmesh.lab.wait import wait_until

SWITCH_BUDGET = 1.0
"""Seconds (reference machine) from the first coordinator's death to the agent long-polling the second."""
CHANGE_BUDGET = 1.0
"""Seconds from a change through the second coordinator to the agent holding the netmap with it."""


@pytest.fixture
def pair(pg_cluster: Cluster, tmp_path: Path) -> Iterator[Pair]:
    with coordinators(pg_cluster, tmp_path) as made:
        yield made


def agent_config(pair: Pair, token: str, state_dir: Path, name: str) -> AgentConfig:
    return AgentConfig(
        coordinator=(pair.a.url, pair.b.url),
        name=name,
        token=token,
        state_dir=state_dir,
        metrics_listen="off",
        coordinator_pin=str(pair.a.pin),  # one registry, one identity: it covers both
    )


class Follow(threading.Thread):
    """The follower's long-polls in a thread, until one brings a netmap with a peer named `want`."""

    def __init__(self, agent: Agent, want: str) -> None:
        super().__init__(daemon=True)
        self.agent, self.want = agent, want
        self.error: BaseException | None = None
        self.got_at: float | None = None

    def run(self) -> None:
        try:
            while not any(p.name == self.want for p in self.agent.netmap.peers if self.agent.netmap):
                self.agent.follower.poll_once(wait=20)
            self.got_at = time.monotonic()
        except BaseException as exc:  # the test reads it
            self.error = exc


def test_the_agent_fails_over_to_the_second_coordinator_and_follows_it(
    pair: Pair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wgmesh.api_client")
    with pair.a.admin() as admin:
        token = create_token(admin)["token"]
    with memory_agent(agent_config(pair, token, tmp_path / "agent", "gw-fo")) as agent:
        agent.dataplane.up()
        agent.client.credential = agent.enroll().credential
        assert agent.client.url == pair.a.url
        agent.report()
        follow = Follow(agent, "via-b")
        follow.start()
        assert pair.a.proc is not None
        pair.a.proc.kill()  # no goodbye: the held long-poll's connection just ends
        killed = time.monotonic()
        wait_until(lambda: agent.client.url == pair.b.url, scaled(SWITCH_BUDGET) + 1, "agent on B")
        switched = time.monotonic() - killed
        pair.a.proc.wait()
        with pair.b.admin() as admin:
            r = admin.post("/api/v1/nodes", json={"name": "via-b", "generate_keys": True})
            assert r.status_code == 201, r.text
            changed = time.monotonic()
            follow.join(scaled(CHANGE_BUDGET) + 5)
            assert follow.error is None, follow.error
            assert follow.got_at is not None, "the change through B never reached the agent"
            reached = follow.got_at - changed
            agent.report()
            r = admin.get("/api/v1/nodes/gw-fo/status")
            assert r.status_code == 200, r.text
            assert r.json()["report"]["coordinator"] == pair.b.url
            r = admin.get("/api/v1/topology")
            assert {n["name"]: n["coordinator"] for n in r.json()["nodes"]}["gw-fo"] == pair.b.url
        assert agent.local_status().coordinator == pair.b.url
    switches = [r for r in caplog.records if r.getMessage() == "coordinator switched"]
    assert [(r.kv["previous"], r.kv["coordinator"]) for r in switches] == [(pair.a.url, pair.b.url)]
    print(
        f"agent on B {switched * 1000:.0f} ms after A died; change through B on the agent after "
        f"{reached * 1000:.0f} ms"
    )
    assert switched < scaled(SWITCH_BUDGET)
    assert reached < scaled(CHANGE_BUDGET)


def test_an_enrollment_whose_answer_is_lost_is_retried_on_the_other_coordinator(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    # Plain HTTP behind the proxy (--insecure-http): the proxy reads no TLS, and the agent pins nothing.
    with coordinators(pg_cluster, tmp_path, "--insecure-http") as pair:
        with pair.a.admin() as admin:
            token = JoinToken.parse(create_token(admin)["token"]).secret
        dropper = AnswerDropper(("127.0.0.1", pair.a.port))
        cfg = AgentConfig(
            coordinator=(dropper.url, pair.b.url),
            name="gw-lost",
            token=token,
            state_dir=tmp_path / "agent",
            metrics_listen="off",
        )
        with dropper, memory_agent(cfg) as agent:
            agent.dataplane.up()
            enrollment = agent.enroll()
            assert dropper.dropped == 1, "the first answer was not lost"
            assert agent.client.url == pair.b.url
            agent.client.credential = enrollment.credential
            fetched = agent.client.netmap(-1, 0)  # the credential it got works
            assert fetched is not None and fetched.name == "gw-lost"
            agent.report()
            assert agent.reachable
        with pair.b.admin() as admin:
            nodes = [n["name"] for n in admin.get("/api/v1/nodes").json()["nodes"]]
            assert nodes == ["gw-lost"]  # one node, not two
            audit = admin.get("/api/v1/audit").json()["entries"]
            again = [e for e in audit if e["action"] == "node.enroll_again"]
            assert [(e["target"], e["actor"].startswith("token:")) for e in again] == [("gw-lost", True)]
