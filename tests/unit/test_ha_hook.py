"""The `--on-primary` hook (agent/ha_hook.py): a real command run with the event in its environment, the
latest event per prefix, a failure retried until it succeeds."""

from __future__ import annotations

import ipaddress
import json
import sys
import threading
import time
from pathlib import Path

import pytest

from wgmesh.agent.ha_hook import RoleEvent, RoleHook, parse_command
from wgmesh.errors import ValidationError

RECORD = """
import json, os, sys
path, fail_file = sys.argv[1], sys.argv[2]
if os.path.exists(fail_file):
    os.remove(fail_file)
    sys.exit(3)
with open(path, "a") as fh:
    fh.write(json.dumps({k: v for k, v in os.environ.items() if k.startswith("WGMESH_") and k != "WGMESH_TIME_SCALE"}) + "\\n")
"""


def event(role: str, holder: str) -> RoleEvent:
    return RoleEvent(
        prefix=ipaddress.ip_network("10.2.0.0/24"),
        role=role,
        site="vpc2",
        node="gw2b",
        holder=holder,
        mesh_prefixes=(ipaddress.ip_network("100.96.0.0/16"), ipaddress.ip_network("10.1.0.0/24")),
    )


def wait_for(check: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


def runs(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_hook_gets_the_event_and_a_failure_is_retried(tmp_path: Path) -> None:
    script, out, fail = tmp_path / "hook.py", tmp_path / "runs.jsonl", tmp_path / "fail-once"
    script.write_text(RECORD)
    fail.touch()  # the first run fails, as a cloud API call can
    stop = threading.Event()
    hook = RoleHook((sys.executable, str(script), str(out), str(fail)), stop)
    hook.start()
    try:
        hook.want(event("primary", "gw2b"))
        wait_for(lambda: len(runs(out)) == 1)
        assert hook.failures == 1
        assert runs(out)[0] == {
            "WGMESH_HA_ROLE": "primary",
            "WGMESH_HA_PREFIX": "10.2.0.0/24",
            "WGMESH_HA_SITE": "vpc2",
            "WGMESH_NODE": "gw2b",
            "WGMESH_HA_HOLDER": "gw2b",
            "WGMESH_MESH_PREFIXES": "100.96.0.0/16 10.1.0.0/24",
        }
    finally:
        stop.set()
        hook.close()


def test_the_latest_wanted_role_runs_and_a_standby_that_never_led_runs_nothing(tmp_path: Path) -> None:
    script, out = tmp_path / "hook.py", tmp_path / "runs.jsonl"
    script.write_text(RECORD)
    stop = threading.Event()
    hook = RoleHook((sys.executable, str(script), str(out), str(tmp_path / "none")), stop)
    hook.want(event("primary", "gw2b"))
    hook.want(event("standby", "gw2"))  # superseded before the thread ran: and a standby has nothing to undo
    hook.start()
    try:
        hook.want(event("primary", "gw2b"))
        wait_for(lambda: len(runs(out)) == 1)
        hook.want(event("standby", "gw2"))
        wait_for(lambda: len(runs(out)) == 2)
        hook.want(event("standby", "gw2"))  # the same again: nothing to do
        hook.want(event("standby", "gw2c"))  # another holder: a standby run would change nothing either
        wait_for(lambda: hook.due(time.monotonic()) is None)  # once the run is recorded
        assert [r["WGMESH_HA_ROLE"] for r in runs(out)] == ["primary", "standby"]
    finally:
        stop.set()
        hook.close()


FAIL_ONE = """
import json, os, sys
if os.environ["WGMESH_HA_PREFIX"] == "10.9.0.0/24":
    sys.exit(4)
with open(sys.argv[1], "a") as fh:
    fh.write(json.dumps({"prefix": os.environ["WGMESH_HA_PREFIX"]}) + "\\n")
"""


def test_a_prefix_whose_hook_keeps_failing_does_not_hold_up_the_others(tmp_path: Path) -> None:
    script, out = tmp_path / "hook.py", tmp_path / "runs.jsonl"
    script.write_text(FAIL_ONE)
    stop = threading.Event()
    hook = RoleHook((sys.executable, str(script), str(out)), stop)
    broken = RoleEvent(ipaddress.ip_network("10.9.0.0/24"), "primary", "vpc9", "gw9", "gw9", ())
    hook.want(broken)
    hook.want(event("primary", "gw2b"))
    hook.start()
    try:
        wait_for(lambda: len(runs(out)) == 1 and hook.failures >= 1)
        assert runs(out) == [{"prefix": "10.2.0.0/24"}]
    finally:
        stop.set()
        hook.close()


def test_a_primary_is_asserted_again_every_minute_and_when_the_mesh_changes(tmp_path: Path) -> None:
    script, out = tmp_path / "hook.py", tmp_path / "runs.jsonl"
    script.write_text(RECORD)
    clock = [1000.0]
    stop = threading.Event()
    hook = RoleHook(
        (sys.executable, str(script), str(out), str(tmp_path / "none")), stop, clock=lambda: clock[0]
    )
    hook.start()
    try:
        hook.want(event("primary", "gw2b"))
        wait_for(lambda: len(runs(out)) == 1)
        wait_for(lambda: hook.due(clock[0]) is None)  # once the run is recorded
        assert hook.due(clock[0] + RoleHook.REASSERT - 1) is None
        clock[0] += RoleHook.REASSERT  # a minute on: the table is put right again, whoever rewrote it
        wait_for(lambda: len(runs(out)) == 2)
        grown = RoleEvent(
            ipaddress.ip_network("10.2.0.0/24"),
            "primary",
            "vpc2",
            "gw2b",
            "gw2b",
            (
                ipaddress.ip_network("100.96.0.0/16"),
                ipaddress.ip_network("10.1.0.0/24"),
                ipaddress.ip_network("10.3.0.0/24"),
            ),
        )
        hook.want(grown)  # a new site: the VPC must send its prefix here too
        wait_for(lambda: len(runs(out)) == 3)
        assert runs(out)[-1]["WGMESH_MESH_PREFIXES"] == "100.96.0.0/16 10.1.0.0/24 10.3.0.0/24"
    finally:
        stop.set()
        hook.close()


def test_the_command_is_split_without_a_shell() -> None:
    assert parse_command("/usr/local/bin/route-to-me --table 'rtb 1'") == (
        "/usr/local/bin/route-to-me",
        "--table",
        "rtb 1",
    )
    for bad in ("", "   ", "unterminated 'quote"):
        with pytest.raises(ValidationError):
            parse_command(bad)
