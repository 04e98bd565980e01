"""Moving a running lab's registry from SQLite to PostgreSQL, as an operator moves one machine to HA.

The steps are docs/deploy.md's: stop the coordinator, start PostgreSQL, `wgmesh-coordinator migrate
--from sqlite:///… --to postgresql://…` (which copies everything and checks the copy), start the
coordinators on it. Agents and relays are not touched. A move that fails before the first coordinator
answers on PostgreSQL puts the lab back on SQLite, whose file the migration only read.
"""

from __future__ import annotations

import logging
import shutil
import time

from wgmesh.errors import ValidationError, WgmeshError
from wgmesh.lab import postgres, services, system
from wgmesh.lab.layout import (
    DATABASE_NODE,
    check_hubs,
    coordinator_db_url,
    coordinator_node,
    hub_address_commands,
    sqlite_db_url,
)
from wgmesh.lab.record import LabState, save
from wgmesh.lab.tools import program
from wgmesh.lab.wait import Progress, quiet
from wgmesh.logs import kv

log = logging.getLogger("wgmesh.lab")

MIGRATE_BUDGET = 60.0
"""Seconds (reference machine) for `wgmesh-coordinator migrate` of a lab's registry (about 2 s)."""


def move_to_postgresql(state: LabState, coordinators: int = 1, progress: Progress = quiet) -> float:
    """Move lab `state`'s registry to PostgreSQL and run `coordinators` coordinators on it; returns the
    seconds no coordinator answered (until the first answered on PostgreSQL)."""
    check_hubs(coordinators, "--coordinators")
    if state.db != "sqlite":
        raise ValidationError(f"lab {state.name} already keeps its registry in {state.db}", code="invalid_db")
    if (reason := postgres.missing()) is not None:
        raise WgmeshError(reason, code="missing_tool")
    before = state.plan()
    progress("stopping the coordinator")
    services.kill(state, coordinator_node(1))
    stopped = time.monotonic()
    state.db = "postgresql"
    save(state)
    try:
        progress("starting PostgreSQL")
        services.start(state, "db")
        services.wait_database(state)
        progress("copying the registry")
        source, target = sqlite_db_url(before), coordinator_db_url(state.plan())
        system.run(
            [program("wgmesh-coordinator"), "migrate", "--from", source, "--to", target],
            timeout=MIGRATE_BUDGET,
        )
        progress(f"starting {coordinator_node(1)} on PostgreSQL")
        services.start(state, coordinator_node(1))
        services.wait_coordinator(state)
    except BaseException:
        back_to_sqlite(state)
        raise
    down = time.monotonic() - stopped
    # From here the lab runs on PostgreSQL: a coordinator that fails to start is started again with
    # `wgmesh lab start hubN`, the record already names it.
    state.coordinators = coordinators
    save(state)
    after = state.plan()
    system.apply(
        hub_address_commands(after, [a for a in after.hub_addresses if a not in before.hub_addresses])
    )
    for index in range(2, coordinators + 1):
        node = coordinator_node(index)
        progress(f"starting {node} on PostgreSQL")
        services.start(state, node)
        services.wait_coordinator(state, node=node)
    log.info(
        "lab moved to postgresql", extra=kv(lab=state.name, coordinators=coordinators, down_s=round(down, 2))
    )
    return down


def back_to_sqlite(state: LabState) -> None:
    """Undo a move that failed, each step whatever the previous one did: the coordinator on PostgreSQL and
    the database stopped, the cluster (only the copy is in it) removed so that a retry starts empty, the
    record on SQLite again, the coordinator started on its untouched file."""
    for node in (coordinator_node(1), DATABASE_NODE):
        try:
            services.kill(state, node)
        except WgmeshError as exc:
            log.warning(
                "undoing the move: cannot stop", extra=kv(lab=state.name, node=node, error=exc.message)
            )
    if not services.alive(state, DATABASE_NODE):
        shutil.rmtree(state.plan().pg_root, ignore_errors=True)
    state.db = "sqlite"
    save(state)
    try:
        services.start(state, coordinator_node(1))
        services.wait_coordinator(state)
    except WgmeshError as exc:
        log.warning(
            "undoing the move: the coordinator did not come back", extra=kv(lab=state.name, error=exc.message)
        )
