"""The API tests' module coordinator runs in this interpreter (inprocess_harness): no process to start
for what only needs the HTTP API. Tests about the process itself start a `coordinator_harness.Coordinator`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from coordinator_harness import running
from inprocess_harness import InProcessCoordinator


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessCoordinator]:
    """One in-process coordinator on a fresh SQLite file, shared by the tests of a module."""
    tmp = tmp_path_factory.mktemp("coordinator")
    with running(InProcessCoordinator(db=tmp / "coordinator.db", log=tmp / "coordinator.log")) as c:
        yield c
