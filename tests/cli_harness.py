"""Helpers for running the real `wgmesh` CLI as a subprocess (shared by the CLI and e2e tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from wgmesh.lab.timescale import scaled

ENTRY = "from wgmesh.cli.main import main; main()"


def run_wgmesh(*args: str) -> subprocess.CompletedProcess[str]:
    """`wgmesh ARGS` in a process of its own with this environment (no coordinator needed: refusals)."""
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, timeout=scaled(30), check=False
    )


# Runs each command line of a JSON list (argv[1]) through the same main() one after the other, each
# with its own stdout and stderr, and writes their exit codes and output as JSON: one interpreter
# start-up (about a second) for many commands whose messages a test checks.
BATCH_ENTRY = """
import contextlib, io, json, sys
from wgmesh.cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["wgmesh", *argv]
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    results.append([code, out.getvalue(), err.getvalue()])
sys.__stdout__.write(json.dumps(results))
"""
CLI_TIMEOUT = 30.0

# The `wgmesh status --json` contract (docs/cli.md): the fields of a node, a peer and a route.
NODE_FIELDS = {
    "name",
    "overlay_ip",
    "eth0_ip",
    "public_ip",
    "online",
    "last_seen",
    "p2p",
    "mtu",
    "coordinator",
    "agent_version",
    "site",
    "subnets",
    "peers",
}
PEER_FIELDS = {
    "name",
    "overlay_ip",
    "eth0_ip",
    "public_ip",
    "path",
    "endpoint",
    "relay",
    "rtt_ms",
    "rx_bytes",
    "tx_bytes",
    "last_handshake",
    "reason",
    "health",
}
ROUTE_FIELDS = {"prefix", "gateway", "state", "reason", "conflicts_with", "decided_by", "alias"}


@dataclass
class Result:
    """What one CLI run left behind."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, f"exit {self.code}: {self.err}"
        return json.loads(self.out)

    def one_line_error(self) -> str:
        """The error message, asserting it is exactly one line starting with the program name."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("wgmesh"), self.err
        assert "Traceback" not in self.err
        return lines[0]


def base_env(home: Path) -> dict[str, str]:
    """The environment of a CLI run: nothing of the caller's wgmesh settings or proxies."""
    drop = ("WGMESH_", "XDG_CONFIG_HOME", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
    env["HOME"] = str(home)
    env["COLUMNS"] = "120"
    return env


def run_cli(
    *args: str,
    env: Mapping[str, str],
    stdin: Any = subprocess.DEVNULL,
    input: str | None = None,
    timeout: float = CLI_TIMEOUT,
) -> Result:
    """Run `wgmesh ARGS…` as its own process."""
    proc = subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        check=False,
        env=dict(env),
        stdin=None if input is not None else stdin,
        input=input,
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_cli_batch(commands: Sequence[Sequence[str]], env: Mapping[str, str]) -> list[Result]:
    """Run `wgmesh ARGS…` for each command line, in one process of their own (BATCH_ENTRY): for tests
    of what many commands answer, not of what a fresh process does (run_cli is for that)."""
    proc = subprocess.run(
        [sys.executable, "-c", BATCH_ENTRY, json.dumps([list(c) for c in commands])],
        check=False,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=scaled(CLI_TIMEOUT + 2.0 * len(commands)),  # one start-up, then each command's work
    )
    assert proc.returncode == 0, proc.stderr
    return [Result(code, out, err) for code, out, err in json.loads(proc.stdout)]


class Cli(Protocol):
    def __call__(self, *args: str, env: Mapping[str, str] | None = None, **kw: Any) -> Result: ...
