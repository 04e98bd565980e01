"""The programs a lab runs: wgmesh's own console scripts (or builds named by the environment) and system tools."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from wgmesh.errors import WgmeshError

RELAY_PROGRAM = "wgmesh-relay"
# Runs the lab with another agent build (another checkout, an older release) instead of this one's.
AGENT_ENV = "WGMESH_LAB_AGENT"
# The same for the hub's relay (a path that is not a program makes the lab run without a relay).
RELAY_ENV = "WGMESH_LAB_RELAY"


def agent_available() -> bool:
    """Whether there is a working agent: `wgmesh.agent.main` imports, or $WGMESH_LAB_AGENT is a program."""
    override = os.environ.get(AGENT_ENV)
    if override:
        return os.access(override, os.X_OK)
    try:
        importlib.import_module("wgmesh.agent.main")
    except (ImportError, SyntaxError):
        return False
    return True


def relay_available() -> bool:
    """Whether `wgmesh-relay` is installed (beside this Python or on PATH), or $WGMESH_LAB_RELAY is a program."""
    override = os.environ.get(RELAY_ENV)
    if override:
        return os.access(override, os.X_OK)
    try:
        program(RELAY_PROGRAM)
    except WgmeshError:
        return False
    return True


def program(name: str) -> str:
    """The path of a wgmesh console script, preferring the one next to this Python (the same venv)."""
    if name == "wgmesh-agent" and os.environ.get(AGENT_ENV):
        return os.environ[AGENT_ENV]
    if name == RELAY_PROGRAM and os.environ.get(RELAY_ENV):
        return os.environ[RELAY_ENV]
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise WgmeshError(f"{name} is not installed", code="missing_tool")
    return found


def require_tools(names: Iterable[str]) -> None:
    """Fail naming every system tool (ip, nft, tc, ...) that is not on PATH."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise WgmeshError(f"missing tools: {', '.join(missing)} (run 'make setup')", code="missing_tool")
