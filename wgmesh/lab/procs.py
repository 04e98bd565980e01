"""Processes the lab starts: spawned detached with a log file, identified by (pid, start time), ended by pid."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wgmesh.logs import kv

log = logging.getLogger("wgmesh.lab")

# Popen objects of children still running, kept so they are reaped (not left as zombies) when this
# process is the one that later ends them, e.g. a test session that runs `up` and `down` in-process.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessId:
    """A process as the kernel names it: the pid plus its start time, so a reused pid never matches."""

    pid: int
    start_ticks: int


def parse_stat(text: str) -> tuple[str, int]:
    """(state letter, start time in clock ticks) from the text of /proc/PID/stat."""
    # The command name sits in parentheses and may itself contain spaces and ')'.
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])


def identity(pid: int) -> ProcessId | None:
    """The identity of a live (non-zombie) process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ticks = parse_stat(text)
    if state in ("Z", "X"):
        return None
    return ProcessId(pid, ticks)


def cmdline(pid: int) -> list[str]:
    """A process's arguments (empty when it is gone or has none, as a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def alive(proc: ProcessId) -> bool:
    """Whether this very process still runs."""
    _reap(proc.pid)
    return identity(proc.pid) == proc


def spawn(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> ProcessId:
    """Start `argv` in its own session with stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "ab") as out:
        # A new session: the process outlives the CLI that started it and ignores its terminal's ^C.
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
    _children[child.pid] = child
    found = identity(child.pid)
    if found is None:
        # It already exited; its identity no longer matters, only that it is not running.
        return ProcessId(child.pid, -1)
    return found


def exit_status(proc: ProcessId) -> int | None:
    """The exit status of a child this process started and that has ended, else None."""
    child = _children.get(proc.pid)
    if child is None:
        return None
    return child.poll()


def _reap(pid: int) -> None:
    # poll() reaps an ended child of ours and keeps its exit status for exit_status().
    child = _children.get(pid)
    if child is not None:
        child.poll()


def terminate(
    procs: Iterable[ProcessId], grace: float = 5.0, sig: signal.Signals = signal.SIGTERM
) -> list[ProcessId]:
    """Send `sig` (SIGTERM) to each process, SIGKILL what is left after `grace` seconds; returns those that
    were running."""
    running = [p for p in procs if alive(p)]
    for proc in running:
        _signal(proc, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in running):
        time.sleep(0.05)
    stubborn = [p for p in running if alive(p)]
    for proc in stubborn:
        # Info, not warning: the coordinator routinely outlasts its grace while long-polls drain.
        log.info("process outlived its grace period; killing", extra=kv(pid=proc.pid, grace=grace))
        _signal(proc, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(alive(p) for p in stubborn):
        time.sleep(0.02)
    return running


def _signal(proc: ProcessId, sig: signal.Signals) -> None:
    # Check the identity right before signalling, so a pid reused since it was recorded is left alone.
    if identity(proc.pid) == proc:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def send(proc: ProcessId, sig: signal.Signals) -> bool:
    """Send `sig` to the process if it is still the same one; returns whether it was."""
    if not alive(proc):
        return False
    _signal(proc, sig)
    return True


def tail(path: Path, lines: int = 1) -> str:
    """The last `lines` non-empty lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])
