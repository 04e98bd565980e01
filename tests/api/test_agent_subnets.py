"""A gateway's advertised subnets as the agent states them (issue 14, point 6): once, after enrolling and at
every start, exactly its --advertise; the same set again changes nothing, none withdraws them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from agent_harness import memory_agent
from coordinator_harness import Coordinator, create_token, version

from wgmesh.agent.agent import Agent
from wgmesh.agent.config import AgentConfig

REAL_PROCESS = True  # the agent's own HTTP client needs the coordinator's URL (tests/api/conftest.py)

NAME = "gw-sub"


@contextmanager
def agent(
    coordinator: Coordinator, state_dir: Path, advertise: tuple[str, ...], token: str | None
) -> Iterator[Agent]:
    """The agent of gateway NAME, enrolled (with `token` the first time) as `run` does it."""
    cfg = AgentConfig(
        coordinator=coordinator.url,
        name=NAME,
        token=token,
        advertise=advertise,
        state_dir=state_dir,
        metrics_listen="off",
    )
    with memory_agent(cfg) as made:
        made.dataplane.up()
        made.client.credential = made.enroll().credential
        yield made


def subnets(admin: httpx.Client) -> list[str]:
    r = admin.get(f"/api/v1/nodes/{NAME}")
    assert r.status_code == 200, r.text
    return list(r.json()["subnets"])


def test_the_agent_states_its_subnets_once_per_start(
    coordinator: Coordinator, admin: httpx.Client, tmp_path: Path
) -> None:
    token = create_token(admin)["token"]
    advertise = ("10.31.0.0/16", "10.32.0.0/24")
    with agent(coordinator, tmp_path, advertise, token) as first:
        # Enrollment carries none: the one statement after it does.
        assert subnets(admin) == []
        enrolled = version(admin)
        first.sync_advertised()
        assert subnets(admin) == list(advertise)
        assert version(admin) == enrolled + 1
    stated = version(admin)
    # A restart with the same flags (stored enrollment, no token): nothing changes, nobody wakes.
    with agent(coordinator, tmp_path, advertise, None) as again:
        again.sync_advertised()
    assert subnets(admin) == list(advertise) and version(admin) == stated
    # One flag fewer: that subnet is withdrawn.
    with agent(coordinator, tmp_path, advertise[:1], None) as fewer:
        fewer.sync_advertised()
    assert subnets(admin) == list(advertise[:1]) and version(admin) == stated + 1
    # An admin adds one; a restart with no --advertise withdraws every subnet of the node, that one too.
    assert (
        admin.patch(f"/api/v1/nodes/{NAME}", json={"subnets": ["10.31.0.0/16", "10.33.0.0/16"]}).status_code
        == 200
    )
    with agent(coordinator, tmp_path, (), None) as bare:
        bare.sync_advertised()
    assert subnets(admin) == []


def test_the_agent_client_states_its_site_with_its_subnets(
    coordinator: Coordinator, admin: httpx.Client, tmp_path: Path
) -> None:
    admin.delete(f"/api/v1/nodes/{NAME}")  # enrolled by the test before, if it ran
    token = create_token(admin)["token"]
    with agent(coordinator, tmp_path, (), token) as gw:
        assert admin.get(f"/api/v1/nodes/{NAME}").json()["site"] == NAME  # none named: its own
        before = version(admin)
        gw.client.advertise([], site="vpc9")
        assert admin.get(f"/api/v1/nodes/{NAME}").json()["site"] == "vpc9"
        assert version(admin) == before + 1
        gw.client.advertise([], site="vpc9")  # the same statement again: nothing written
        assert version(admin) == before + 1
        gw.client.advertise([])
        assert admin.get(f"/api/v1/nodes/{NAME}").json()["site"] == NAME
    assert admin.delete(f"/api/v1/nodes/{NAME}").status_code == 200
