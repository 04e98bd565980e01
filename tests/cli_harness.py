"""Helpers for running the real `wgmesh` CLI as a subprocess (shared by the CLI and e2e tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from wgmesh.lab.timescale import scaled

ENTRY = "from wgmesh.cli.main import main; main()"
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
}
ROUTE_FIELDS = {"prefix", "gateway", "state", "reason", "conflicts_with", "decided_by"}


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


class Cli(Protocol):
    def __call__(self, *args: str, env: Mapping[str, str] | None = None, **kw: Any) -> Result: ...
