"""The lab's `--on-primary` hook (issue 18): the VPC host's default route plays the cloud's route table."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from wgmesh.errors import ValidationError
from wgmesh.lab import route_table_hook
from wgmesh.lab.route_table_hook import parse_event, route_command, run

ENV = {
    "WGMESH_HA_ROLE": "primary",
    "WGMESH_HA_PREFIX": "10.2.0.0/24",
    "WGMESH_HA_SITE": "vpc2",
    "WGMESH_NODE": "gw2b",
    "WGMESH_HA_HOLDER": "gw2b",
    "WGMESH_MESH_PREFIXES": "10.1.0.0/24 100.96.0.0/16",
}


def test_the_event_is_parsed_once() -> None:
    event = parse_event(ENV)
    assert (event.role, event.prefix, event.site, event.node, event.holder) == (
        "primary",
        "10.2.0.0/24",
        "vpc2",
        "gw2b",
        "gw2b",
    )
    assert event.mesh_prefixes == ("10.1.0.0/24", "100.96.0.0/16")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"WGMESH_HA_ROLE": "leader"}, "WGMESH_HA_ROLE must be primary or standby"),
        ({"WGMESH_HA_ROLE": ""}, "WGMESH_HA_ROLE"),
        ({"WGMESH_HA_PREFIX": "10.2.0/x"}, "is not a prefix"),
    ],
)
def test_bad_events_are_refused(change: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_event({**ENV, **change})


def test_primary_points_the_vpc_route_at_this_gateway_and_standby_does_nothing() -> None:
    assert route_command(parse_event(ENV), "wgl-vm2", "10.2.0.2") == [
        "ip",
        "-n",
        "wgl-vm2",
        "route",
        "replace",
        "default",
        "via",
        "10.2.0.2",
    ]
    standby = parse_event({**ENV, "WGMESH_HA_ROLE": "standby", "WGMESH_HA_HOLDER": "gw2"})
    assert route_command(standby, "wgl-vm2", "10.2.0.2") is None


class FakeRun:
    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.returncode, self.stderr = returncode, stderr

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert "shell" not in kwargs
        self.calls.append(argv)
        return subprocess.CompletedProcess(argv, self.returncode, "", self.stderr)


ARGS = ["--vm-netns", "wgl-vm2", "--via", "10.2.0.2"]


def test_run_rewrites_the_route_and_logs_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeRun()
    monkeypatch.setattr(route_table_hook.subprocess, "run", fake)
    caplog.set_level("INFO")
    assert run(ARGS, ENV) == 0
    assert fake.calls == [["ip", "-n", "wgl-vm2", "route", "replace", "default", "via", "10.2.0.2"]]
    [record] = caplog.records
    assert record.getMessage() == "route table updated"
    assert record.kv == {  # type: ignore[attr-defined]
        "role": "primary",
        "prefix": "10.2.0.0/24",
        "site": "vpc2",
        "node": "gw2b",
        "holder": "gw2b",
        "vm_netns": "wgl-vm2",
        "via": "10.2.0.2",
    }


def test_run_on_standby_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRun()
    monkeypatch.setattr(route_table_hook.subprocess, "run", fake)
    assert run(ARGS, {**ENV, "WGMESH_HA_ROLE": "standby"}) == 0
    assert fake.calls == []


def test_run_reports_failures(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(
        route_table_hook.subprocess, "run", FakeRun(2, "Error: Nexthop has invalid gateway.\n")
    )
    assert run(ARGS, ENV) == 1
    assert run(["--vm-netns", "wgl-vm2", "--via", "not-an-address"], ENV) == 2
    assert run(ARGS, {**ENV, "WGMESH_HA_ROLE": "boss"}) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("route_table_hook: ") for line in lines)
