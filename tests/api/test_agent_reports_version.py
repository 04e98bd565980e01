"""A real agent's status report carries the version it runs (`wgmesh.__version__`), and the coordinator
shows it on the node without a warning (issue 22)."""

from __future__ import annotations

from pathlib import Path

import httpx
from agent_harness import memory_agent
from coordinator_harness import Coordinator, create_token

from wgmesh import __version__
from wgmesh.agent.config import AgentConfig

REAL_PROCESS = True  # the agent's own HTTP client needs the coordinator's URL (tests/api/conftest.py)


def test_the_agent_reports_its_version(coordinator: Coordinator, admin: httpx.Client, tmp_path: Path) -> None:
    cfg = AgentConfig(
        coordinator=coordinator.url,
        name="gw-ver",
        token=create_token(admin)["token"],
        state_dir=tmp_path,
        metrics_listen="off",
    )
    with memory_agent(cfg) as agent:
        agent.dataplane.up()
        agent.client.credential = agent.enroll().credential
        agent.report()
    r = admin.get("/api/v1/nodes/gw-ver/status")
    assert r.status_code == 200, r.text
    assert r.json()["report"]["agent_version"] == __version__
    r = admin.get("/api/v1/topology")
    assert r.status_code == 200, r.text
    topology = r.json()
    assert {n["name"]: n["agent_version"] for n in topology["nodes"]} == {"gw-ver": __version__}
    assert not [w for w in topology["warnings"] if "runs agent" in w]
