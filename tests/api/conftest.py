"""Fixtures for the API tests: one real coordinator per module, stopped by PID in teardown."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from coordinator_harness import Coordinator, running


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
