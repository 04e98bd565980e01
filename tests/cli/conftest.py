"""Fixtures for the CLI tests: a real coordinator per module, and the real `wgmesh` CLI run as a
subprocess against it with a clean environment (no inherited WGMESH_*, HOME in a temp dir)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Cli, Result, base_env, run_cli
from coordinator_harness import Coordinator, free_port


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
    env["WGMESH_PIN"] = str(coordinator.pin)  # as `eval "$(wgmesh lab env)"` sets it
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
