"""Lab helpers that need no root: process identity, state files, waiting, `ss` parsing, CLI usage errors."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest
from cli_harness import run_wgmesh

from wgmesh.errors import ValidationError
from wgmesh.lab import procs, timescale
from wgmesh.lab.record import LabState, ProcessRecord, all_states, load, save, state_path
from wgmesh.lab.system import parse_ss_pids
from wgmesh.lab.wait import NotYet, WaitTimeout, wait_until


def test_parse_stat_survives_odd_command_names() -> None:
    fields = " ".join(["S"] + [str(n) for n in range(1, 25)])
    state, ticks = procs.parse_stat(f"1234 (we ird) (name)) {fields}")
    assert state == "S"
    assert ticks == 19


def test_identity_tells_a_process_from_its_successor() -> None:
    me = procs.identity(os.getpid())
    assert me is not None
    assert procs.alive(me)
    assert not procs.alive(procs.ProcessId(me.pid, me.start_ticks + 1))


def test_spawn_logs_and_terminate_ends_by_pid(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "x.log"
    proc = procs.spawn([sys.executable, "-c", "import time; print('hello', flush=True); time.sleep(60)"], log)
    try:
        wait_until(lambda: "hello" in log.read_text(), 10, "the child's first line")
        assert procs.tail(log) == "hello"
        assert procs.terminate([proc], grace=5) == [proc]
        assert not procs.alive(proc)
        assert procs.exit_status(proc) == -15
    finally:
        procs.send(proc, procs.signal.SIGKILL)


def test_terminate_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    log = tmp_path / "stubborn.log"
    proc = procs.spawn([sys.executable, "-c", code], log)
    try:
        wait_until(lambda: "ready" in log.read_text(), 10, "the child to ignore SIGTERM")
        procs.terminate([proc], grace=0.2)
        assert not procs.alive(proc)
    finally:
        procs.send(proc, procs.signal.SIGKILL)


def test_state_roundtrip_is_private(tmp_path: Path) -> None:
    state = LabState(
        name="wgl",
        slot=1,
        loopback_port=8081,
        sites=2,
        backend="userspace",
        agents=True,
        admin_token="secret",
    )
    state.record(ProcessRecord(role="agent", node="gw1", pid=10, start_ticks=5, log="/x"))
    state.record(ProcessRecord(role="agent", node="gw1", pid=11, start_ticks=6, log="/x"))
    save(state, tmp_path)
    path = state_path("wgl", tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load("wgl", tmp_path)
    assert loaded == state
    assert loaded is not None
    rec = loaded.process("gw1")
    assert rec is not None
    assert rec.pid == 11
    assert loaded.plan().loopback_port == 8081
    assert load("other", tmp_path) is None
    assert [s.name for s in all_states(tmp_path)] == ["wgl"]


def test_wait_until_returns_elapsed_and_reports_the_last_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(timescale.ENV, "1")
    calls = []

    def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    assert wait_until(third_time, 5, "three calls", interval=0.001) < 5

    def never() -> bool:
        raise AssertionError("still 2 of 3")

    start = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 0.1s waiting for it \(last: still 2 of 3\)"):
        wait_until(never, 0.1, "it", interval=0.01)
    assert time.monotonic() - start < 2


def test_lab_code_says_not_yet_with_its_own_type_and_other_errors_end_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(timescale.ENV, "1")

    def not_yet() -> bool:
        raise NotYet("coordinator not listening")

    with pytest.raises(WaitTimeout, match=r"\(last: coordinator not listening\)"):
        wait_until(not_yet, 0.05, "it", interval=0.01)

    def broken() -> bool:
        raise ValidationError("bad plan", code="bad")

    start = time.monotonic()
    with pytest.raises(ValidationError, match="bad plan"):
        wait_until(broken, 5, "it", interval=0.01)
    assert time.monotonic() - start < 1


def test_wait_until_takes_named_errors_as_not_yet_and_only_those(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(timescale.ENV, "1")
    calls: list[int] = []

    def coming_up() -> bool:
        # What a benchmark's check meets while the lab starts: a report without the key yet.
        calls.append(1)
        if len(calls) < 3:
            raise KeyError("report")
        return True

    assert wait_until(coming_up, 5, "the report", interval=0.001, not_yet=(KeyError,)) < 5
    assert len(calls) == 3
    with pytest.raises(WaitTimeout, match=r"\(last: 'report'\)"):
        wait_until(lambda: {}["report"], 0.05, "it", interval=0.01, not_yet=(KeyError,))
    with pytest.raises(KeyError):
        wait_until(lambda: {}["report"], 5, "it", interval=0.01)


def test_wait_until_scales_its_deadline_with_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(timescale.ENV, "3")
    start = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 0.3s \(0.1s x time scale 3\) waiting for it"):
        wait_until(lambda: False, 0.1, "it", interval=0.01)
    assert 0.3 <= time.monotonic() - start < 3


def test_time_scale_factor_from_start_up_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = timescale.REFERENCE_STARTUP
    assert timescale.factor_for(ref / 2) == 1.0  # a faster machine keeps the budgets
    assert timescale.factor_for(ref * 7.5) == 7.5
    assert timescale.factor_for(ref * 1000) == timescale.MAX_FACTOR
    monkeypatch.delenv(timescale.ENV, raising=False)
    assert timescale.time_scale() == 1.0
    monkeypatch.setenv(timescale.ENV, "2.5")
    assert timescale.scaled(4) == 10.0
    for bad in ("fast", "0.5", "1e9"):
        monkeypatch.setenv(timescale.ENV, bad)
        with pytest.raises(ValidationError, match=timescale.ENV):
            timescale.time_scale()


def test_parse_ss_pids() -> None:
    text = 'LISTEN 0 2048 198.18.0.1:8080 0.0.0.0:* users:(("wgmesh-coordina",pid=4242,fd=6),("x",pid=17,fd=3))\n'
    assert parse_ss_pids(text) == [17, 4242]
    assert parse_ss_pids("") == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "required: COMMAND"),
        (("lab",), "required: COMMAND"),
        (("lab", "up", "--sites", "x"), "invalid int value"),
        (("lab", "up", "--backend", "bogus"), "invalid choice"),
        (("lab", "up", "--name", "Bad-Name"), "lab name 'Bad-Name'"),
        (("lab", "up", "--sites", "0", "--name", "zq"), "--sites must be between"),
        (("lab", "down", "--name", "a-b"), "lab name"),
        (("nosuch",), "invalid choice"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: tuple[str, ...], needle: str) -> None:
    done = run_wgmesh(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert needle in done.stderr
    assert done.stderr.startswith("wgmesh")
