"""Fixtures for the CLI tests: a real coordinator per module, and the real `wgmesh` CLI run as a
subprocess against it with a clean environment (no inherited WGMESH_*, HOME in a temp dir)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from coordinator_harness import Coordinator, free_port, running

ENTRY = "from wgmesh.cli.main import main; main()"
CLI_TIMEOUT = 30.0


@dataclass
class Result:
    """What one CLI run left behind."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        import json  # noqa: PLC0415

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
    drop = ("WGMESH_", "XDG_CONFIG_HOME", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
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
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


class Cli(Protocol):
    def __call__(self, *args: str, env: Mapping[str, str] | None = None, **kw: Any) -> Result: ...


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """One coordinator shared by the tests of a module."""
    tmp = tmp_path_factory.mktemp("coordinator")
    with running(Coordinator(db=tmp / "coordinator.db", log=tmp / "coordinator.log")) as c:
        yield c


@pytest.fixture(scope="module")
def admin(coordinator: Coordinator) -> Iterator[httpx.Client]:
    with coordinator.admin() as client:
        yield client


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty HOME, so that no real ~/.config/wgmesh/cli.toml is read."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def cli_env(coordinator: Coordinator, home: Path) -> dict[str, str]:
    """The environment pointing the CLI at the module's coordinator through WGMESH_URL/WGMESH_TOKEN."""
    env = base_env(home)
    env["WGMESH_URL"] = coordinator.url
    assert coordinator.admin_token is not None
    env["WGMESH_TOKEN"] = coordinator.admin_token
    return env


@pytest.fixture(scope="module")
def wgmesh(cli_env: dict[str, str]) -> Cli:
    """`wgmesh(*args)` runs the CLI against the module's coordinator; `env=` replaces the environment."""

    def run(*args: str, env: Mapping[str, str] | None = None, **kw: Any) -> Result:
        return run_cli(*args, env=cli_env if env is None else env, **kw)

    return run


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (just released by the OS)."""
    return free_port()
