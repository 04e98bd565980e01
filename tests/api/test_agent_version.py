"""The agent's version (issue 22): named in the agent's User-Agent, or in the report's body; shown in every
view of its node, a warning (and one log line) when older than the coordinator supports; a report with
neither is accepted and the version unknown; a version in the body that is not printable, or too long, is
refused like other free text."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from coordinator_harness import HOSTILE, Api, Enrolled, assert_error, create_token, enroll, post_status

from wgmesh.versions import MIN_AGENT_VERSION

OLD = "0.0.9"  # older than MIN_AGENT_VERSION
LOGGED = 'event="agent older than supported"'


@pytest.fixture(scope="module")
def token(admin: httpx.Client) -> str:
    return str(create_token(admin, reusable=True)["token"])


def enrolled(coordinator: Api, token: str, name: str) -> Enrolled:
    """A node enrolled by the test itself: a new node, so the summary's link counts are made again."""
    with coordinator.anonymous() as anon:
        return enroll(anon, token, name)


def get(admin: httpx.Client, path: str, **params: Any) -> Any:
    r = admin.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def node_of(topology: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in topology["nodes"] if n["name"] == name)


def warned(topology: dict[str, Any], name: str) -> list[str]:
    return [w for w in topology["warnings"] if w.startswith(f"{name} runs agent")]


def test_the_reported_version_is_in_every_view_of_the_node(
    coordinator: Api, admin: httpx.Client, token: str
) -> None:
    node = enrolled(coordinator, token, "av-new")
    post_status(coordinator, node, {"agent_version": "0.2.0"})
    topology = get(admin, "/api/v1/topology")
    assert node_of(topology, "av-new")["agent_version"] == "0.2.0"
    assert warned(topology, "av-new") == []
    assert get(admin, "/api/v1/topology/nodes/av-new")["agent_version"] == "0.2.0"
    (row,) = get(admin, "/api/v1/topology/nodes", name="av-new")["nodes"]
    assert row["agent_version"] == "0.2.0"
    assert get(admin, "/api/v1/nodes/av-new/status")["report"]["agent_version"] == "0.2.0"


def test_an_agent_older_than_supported_is_a_warning_and_logged_once(
    coordinator: Api, admin: httpx.Client, token: str
) -> None:
    node = enrolled(coordinator, token, "av-old")
    post_status(coordinator, node, {"agent_version": OLD})
    post_status(coordinator, node, {"agent_version": OLD})  # the same again: no second log line
    topology = get(admin, "/api/v1/topology")
    assert warned(topology, "av-old") == [
        f"av-old runs agent {OLD}, older than {MIN_AGENT_VERSION}, the oldest this coordinator supports: "
        "upgrade its agent"
    ]
    assert get(admin, "/api/v1/topology/summary")["warnings"]["agent_outdated"] == 1
    assert get(admin, "/api/v1/topology/nodes/av-old")["agent_version"] == OLD

    def logged() -> list[str]:
        return [
            line
            for line in coordinator.log.read_text().splitlines()
            if LOGGED in line and "node=av-old" in line
        ]

    (line,) = logged()
    assert f"version={OLD}" in line and f"minimum={MIN_AGENT_VERSION}" in line and "level=warning" in line
    # Upgraded: the warning goes; going back to the old agent is logged again.
    post_status(coordinator, node, {"agent_version": "0.2.0"})
    assert warned(get(admin, "/api/v1/topology"), "av-old") == []
    assert len(logged()) == 1
    post_status(coordinator, node, {"agent_version": OLD})
    assert len(logged()) == 2
    post_status(coordinator, node, {"agent_version": "0.2.0"})


@pytest.mark.parametrize(
    ("name", "version"), [("av-none", None), ("av-nightly", "nightly"), ("av-source", "0+unknown")]
)
def test_a_report_without_a_known_version_is_accepted_and_not_warned_about(
    coordinator: Api, admin: httpx.Client, token: str, name: str, version: str | None
) -> None:
    node = enrolled(coordinator, token, name)
    # An agent of 0.1.0 sends no `agent_version` at all.
    post_status(
        coordinator, node, {"eth0_ip": "10.9.0.5"} | ({} if version is None else {"agent_version": version})
    )
    topology = get(admin, "/api/v1/topology")
    assert node_of(topology, name)["agent_version"] == version
    assert warned(topology, name) == []
    assert LOGGED not in "\n".join(
        line for line in coordinator.log.read_text().splitlines() if f"node={name}" in line
    )


@pytest.mark.parametrize("bad", HOSTILE, ids=["csi", "osc", "cr"])
def test_a_version_with_control_characters_is_refused(coordinator: Api, token: str, bad: str) -> None:
    node = enrolled(coordinator, token, f"av-bad-{HOSTILE.index(bad)}")
    with coordinator.node(node.credential) as client:
        r = client.post("/api/v1/status", json={"agent_version": f"0.2.0{bad}"})
    error = assert_error(r, 422, "invalid")
    assert error["message"] == "agent_version: must be printable text: no control characters (ESC, CR, LF, …)"


def test_an_over_long_version_is_refused(coordinator: Api, token: str) -> None:
    node = enrolled(coordinator, token, "av-long")
    with coordinator.node(node.credential) as client:
        assert_error(client.post("/api/v1/status", json={"agent_version": "0." + "1" * 63}), 422, "invalid")
        r = client.post("/api/v1/status", json={"agent_version": "0." + "1" * 62})  # 64: the longest taken
    assert r.status_code == 200, r.text


def test_the_version_comes_from_the_agents_user_agent(
    coordinator: Api, admin: httpx.Client, token: str
) -> None:
    """What agents do (0.1.0 ones too): the version in `User-Agent: wgmesh-agent/V`, none in the body."""
    node = enrolled(coordinator, token, "av-header")
    with coordinator.node(node.credential) as client:
        r = client.post("/api/v1/status", json={}, headers={"user-agent": f"wgmesh-agent/{OLD}"})
    assert r.status_code == 200, r.text
    topology = get(admin, "/api/v1/topology")
    assert node_of(topology, "av-header")["agent_version"] == OLD
    assert warned(topology, "av-header") != []
    with coordinator.node(node.credential) as client:  # another client names no agent version
        r = client.post("/api/v1/status", json={}, headers={"user-agent": "curl/8.5.0"})
    assert r.status_code == 200, r.text
    assert node_of(get(admin, "/api/v1/topology"), "av-header")["agent_version"] is None
