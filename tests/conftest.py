"""Loaded for every test: makes the helper modules in tests/ (coordinator_harness) importable from
each test directory, and gives the API, CLI and web tests one coordinator fixture, and the tests that
need PostgreSQL one private cluster per session (tests/pg_harness.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from coordinator_harness import Api, Coordinator, running  # noqa: E402  (needs the path above)
from hypothesis import HealthCheck, settings  # noqa: E402
from pg_harness import Cluster, missing, running_cluster  # noqa: E402

from wgmesh.lab import timescale  # noqa: E402

# Hypothesis's per-example deadline (200 ms) is a speed expectation: on a loaded 2-core machine a pure
# example took 860 ms and failed a correct test. Properties are about results, never about time.
settings.register_profile("wgmesh", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("wgmesh")


def pytest_configure(config: pytest.Config) -> None:
    """Measure how slow this machine is, once, unless WGMESH_TIME_SCALE says it already.

    Exported, so the lab, the harnesses and every program the tests start wait in proportion
    (wgmesh.lab.timescale): a slow CI machine or QEMU's emulation gets longer deadlines, never shorter.
    """
    if not os.environ.get(timescale.ENV):
        os.environ[timescale.ENV] = f"{timescale.measure_factor():g}"


def pytest_report_header(config: pytest.Config) -> str:
    return f"time scale: {timescale.time_scale():g} ({timescale.ENV}; deadlines are multiplied by it)"


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """One real coordinator shared by the tests of a module, stopped by PID in teardown."""
    tmp = tmp_path_factory.mktemp("coordinator")
    with running(Coordinator(db=tmp / "coordinator.db", log=tmp / "coordinator.log")) as c:
        yield c


@pytest.fixture(scope="module")
def admin(coordinator: Api) -> Iterator[httpx.Client]:
    """An HTTP client holding the module coordinator's admin token."""
    with coordinator.admin() as client:
        yield client


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One private PostgreSQL cluster for the whole session (started on first use), stopped at its end."""
    if (why := missing()) is not None:
        pytest.skip(why)
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    with pg_cluster.database() as url:
        yield url
