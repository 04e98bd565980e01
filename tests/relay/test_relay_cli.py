"""`wgmesh-relay` as a program: usage errors are one line with exit 2, failures one line with exit 1,
SIGTERM is a graceful stop that tells every node `going_away`."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from relay_harness import RELAY_BIN, Keys, nodes, relay_process

from wgmesh.relay import protocol as p


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RELAY_BIN, *args], check=False, capture_output=True, text=True, timeout=20)


def one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wgmesh-relay: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def test_help_lists_the_flags() -> None:
    result = run("--help")
    assert result.returncode == 0
    for flag in (
        "--listen",
        "--coordinator-key",
        "--coordinator-key-file",
        "--relay-id",
        "--tls-cert",
        "--max-frame",
        "--max-connections",
        "--max-unauthenticated-per-source",
        "--max-buffered-bytes",
        "--hello-timeout",
        "--unnamed-tickets",
    ):
        assert flag in result.stdout
    assert "--ping-after" not in result.stdout  # test-only flags stay hidden


KEY = ["--coordinator-key", "KEY"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param([], "--coordinator-key", id="missing-key"),
        pytest.param(["--coordinator-key", "not base64!"], "not base64", id="bad-key"),
        pytest.param(["--coordinator-key", "c2hvcnQ="], "32 bytes", id="short-key"),
        pytest.param(["--coordinator-key-file", "/nonexistent/key"], "cannot read", id="missing-key-file"),
        pytest.param([*KEY, "--coordinator-key-file", "F"], "not allowed", id="both-keys"),
        pytest.param([*KEY, "--tls-cert", "relay.crt"], "--tls-key", id="cert-without-key"),
        pytest.param([*KEY, "--tls-key", "relay.key"], "--tls-cert", id="key-without-cert"),
        pytest.param([*KEY, "--listen", "127.0.0.1"], "HOST:PORT", id="listen-without-port"),
        pytest.param([*KEY, "--max-frame", "3"], "max frame", id="max-frame-too-small"),
        pytest.param([*KEY, "--max-frame", "lots"], "invalid int", id="max-frame-not-a-number"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], needle: str, keys: Keys) -> None:
    args = [keys.public if a == "KEY" else a for a in args]
    # a later --listen overrides this one; none of these may get as far as binding
    assert needle in one_line_error(run("--listen", "127.0.0.1:0", *args), 2)


def test_unreadable_tls_files_exit_2(keys: Keys, tmp_path: Path) -> None:
    (tmp_path / "relay.crt").write_text("not a certificate")
    (tmp_path / "relay.key").write_text("not a key")
    line = one_line_error(
        run(
            "--listen",
            "127.0.0.1:0",
            "--coordinator-key",
            keys.public,
            "--tls-cert",
            str(tmp_path / "relay.crt"),
            "--tls-key",
            str(tmp_path / "relay.key"),
        ),
        2,
    )
    assert "cannot load TLS certificate" in line


def test_port_taken_exits_1_with_one_line(keys: Keys) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = one_line_error(run("--listen", f"127.0.0.1:{port}", "--coordinator-key", keys.public), 1)
    assert line == f"wgmesh-relay: cannot listen on 127.0.0.1:{port}: address already in use"


def test_sigterm_sends_going_away_and_logs_final_counts(keys: Keys, tmp_path: Path) -> None:
    key_file = tmp_path / "coordinator.pub"
    key_file.write_text(keys.public + "\n")
    with relay_process(tmp_path / "relay.log", "--coordinator-key-file", str(key_file)) as relay:
        with nodes(relay, 2) as (a, b):
            a.hello(1, keys.ticket(1))
            b.hello(2, keys.ticket(2))
            a.send(p.Data(2, b"delivered"), p.Data(7, b"to nobody"), p.Data(1, b"to myself"))
            assert b.data() == p.Data(1, b"delivered")
            assert a.alive()
            assert relay.proc is not None
            relay.proc.terminate()
            a.expect_close(p.CloseCode.GOING_AWAY)
            b.expect_close(p.CloseCode.GOING_AWAY)
            assert relay.proc.wait(5) == 0
        stopped = [line for line in relay.text().splitlines() if "event=stopped" in line]
    assert len(stopped) == 1
    for field in ("frames_forwarded=1", "dropped_no_receiver=1", "dropped_to_self=1", "closed_going_away=2"):
        assert field in stopped[0]
