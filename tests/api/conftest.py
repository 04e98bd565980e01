"""The API tests' module coordinator runs in this interpreter (inprocess_harness): no process to start
for what only needs the HTTP API. A module whose own HTTP clients (the agent's, the CLI's, the lab's)
need a URL sets `REAL_PROCESS = True`; tests about the process itself start a `Coordinator`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from coordinator_harness import Api, Coordinator, running
from inprocess_harness import InProcessCoordinator


@pytest.fixture(scope="module")
def coordinator(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One coordinator on a fresh SQLite file, shared by the tests of a module: in process, or the real
    process where the module says `REAL_PROCESS = True`."""
    tmp = tmp_path_factory.mktemp("coordinator")
    kind = Coordinator if getattr(request.module, "REAL_PROCESS", False) else InProcessCoordinator
    with running(kind(db=tmp / "coordinator.db", log=tmp / "coordinator.log")) as c:
        yield c
