"""An agent with two coordinators of one registry (two real processes on one PostgreSQL database,
issue 17): when the first dies, its long-poll and its reports move to the second at once, a change made
through the second reaches it, and it says which coordinator it follows (local status, status report)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_harness import memory_agent
from coordinator_harness import Coordinator, create_token, running
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


@dataclass
class Pair:
    a: Coordinator
    b: Coordinator


@contextmanager
def coordinators(cluster: Cluster, tmp_path: Path, *extra: str) -> Iterator[Pair]:
    """Two coordinators on a fresh database: killed ones are not shared with other tests."""
    with cluster.database() as url:
        a = Coordinator(db=tmp_path / "unused-a.db", log=tmp_path / "a.log", database=url, extra=extra)
        b = Coordinator(db=tmp_path / "unused-b.db", log=tmp_path / "b.log", database=url, extra=extra)
        with running(a), running(b):
            yield Pair(a, b)


@pytest.fixture
def pair(pg_cluster: Cluster, tmp_path: Path) -> Iterator[Pair]:
    with coordinators(pg_cluster, tmp_path) as made:
        yield made


class AnswerDropper(threading.Thread):
    """A TCP proxy to `upstream` that passes each request on and, once the answer begins (the
    coordinator has committed), drops it and closes the client's connection: an answer lost on the way."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.dropped = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                with client, socket.create_connection(self.upstream) as up:
                    pipe = threading.Thread(target=_pipe, args=(client, up), daemon=True)
                    pipe.start()
                    if up.recv(1):  # the answer has begun: lose it
                        self.dropped += 1
                    # shutdown, not only close: the pipe thread still holds the socket in recv
                    client.shutdown(socket.SHUT_RDWR)
                    up.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)


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
        dropper.start()
        cfg = AgentConfig(
            coordinator=(dropper.url, pair.b.url),
            name="gw-lost",
            token=token,
            state_dir=tmp_path / "agent",
            metrics_listen="off",
        )
        try:
            with memory_agent(cfg) as agent:
                agent.dataplane.up()
                enrollment = agent.enroll()
                assert dropper.dropped == 1, "the first answer was not lost"
                assert agent.client.url == pair.b.url
                agent.client.credential = enrollment.credential
                assert agent.follower.poll_once(wait=0) in (True, False)  # the credential works
                agent.report()
                assert agent.reachable
        finally:
            dropper.close()
        with pair.b.admin() as admin:
            nodes = [n["name"] for n in admin.get("/api/v1/nodes").json()["nodes"]]
            assert nodes == ["gw-lost"]  # one node, not two
            audit = admin.get("/api/v1/audit").json()["entries"]
            again = [e for e in audit if e["action"] == "node.enroll_again"]
            assert [(e["target"], e["actor"].startswith("token:")) for e in again] == [("gw-lost", True)]
