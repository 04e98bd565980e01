"""Loaded for every test: makes the helper modules in tests/ (coordinator_harness) importable from
each test directory, and gives the API, CLI and web tests one coordinator fixture."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from coordinator_harness import Coordinator, running  # noqa: E402  (needs the path above)


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """One real coordinator shared by the tests of a module, stopped by PID in teardown."""
    tmp = tmp_path_factory.mktemp("coordinator")
    with running(Coordinator(db=tmp / "coordinator.db", log=tmp / "coordinator.log")) as c:
        yield c


@pytest.fixture(scope="module")
def admin(coordinator: Coordinator) -> Iterator[httpx.Client]:
    """An HTTP client holding the module coordinator's admin token."""
    with coordinator.admin() as client:
        yield client
