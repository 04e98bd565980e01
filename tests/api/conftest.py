"""The API tests' module coordinator runs in this interpreter (inprocess_harness): no process to start
for what only needs the HTTP API. A module whose own HTTP clients (the agent's, the CLI's, the lab's)
need a URL sets `REAL_PROCESS = True`; tests about the process itself start a `Coordinator`.

A module that sets `BACKENDS = ("sqlite", "postgresql")` runs its tests once per database: the module
coordinator then runs on a fresh SQLite file, then on a fresh database of the session's PostgreSQL
cluster (tests/pg_harness.py), through the same code."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from coordinator_harness import Api, Coordinator, running
from inprocess_harness import InProcessCoordinator
from pg_harness import Cluster


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    backends = getattr(metafunc.module, "BACKENDS", None)
    if backends is not None and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backends, scope="module")


@pytest.fixture(scope="module")
def backend() -> str:
    """The database the module coordinator runs on: SQLite, unless the module lists BACKENDS."""
    return "sqlite"


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest, backend: str) -> Iterator[str | None]:
    """For `backend` postgresql the URL of a fresh database of the session's cluster, dropped after the
    module; None for SQLite (each coordinator then makes its own file)."""
    if backend != "postgresql":
        yield None
        return
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    with cluster.database() as url:
        yield url


@pytest.fixture(scope="module")
def coordinator(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, database: str | None
) -> Iterator[Api]:
    """One coordinator on a fresh database, shared by the tests of a module: in process, or the real
    process where the module says `REAL_PROCESS = True`."""
    tmp = tmp_path_factory.mktemp("coordinator")
    kind = Coordinator if getattr(request.module, "REAL_PROCESS", False) else InProcessCoordinator
    with running(kind(db=tmp / "coordinator.db", log=tmp / "coordinator.log", database=database)) as c:
        yield c
