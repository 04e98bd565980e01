"""Network-namespace lab: a multi-site mesh on one machine for `make demo`, e2e tests and benchmarks.

Pure: `layout` (namespaces, links, addresses, command lines), `impair` (switches that impair the
underlay), `cloud` (switches that make a site look like a cloud VPC: MTUs, a security group) and
`converge` (reading `wg show`, deciding convergence). At the edge: `system` and `procs` touch the
machine, `tools` finds the programs, `record` keeps the lab's record file, `services` runs the
coordinator, relay and agents, `switches` flips the runtime switches, `observe` watches the mesh,
`status` sums it up, `build` (`up`) and `teardown` (`down`, even after a crash) make and remove a lab,
and `handle.Lab` is the facade over them; `wait` is the one way anything here waits.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wgmesh.lab.build import up
    from wgmesh.lab.handle import Lab
    from wgmesh.lab.layout import DEFAULT_NAME, DEFAULT_SITES, LabPlan, Node, Site, plan_lab
    from wgmesh.lab.status import LabStatus
    from wgmesh.lab.teardown import DownReport, Leftovers, down, leftovers
    from wgmesh.lab.tools import agent_available
    from wgmesh.lab.wait import NotYet, WaitTimeout, wait_until

# Imported on first use: the lab's route-table hook (`python -m wgmesh.lab.route_table_hook`, run by agents
# at a failover) would otherwise import the whole lab, HTTP client and all, before its one `ip` command.
_HOME = {
    "up": "build",
    "Lab": "handle",
    "DEFAULT_NAME": "layout",
    "DEFAULT_SITES": "layout",
    "LabPlan": "layout",
    "Node": "layout",
    "Site": "layout",
    "plan_lab": "layout",
    "LabStatus": "status",
    "DownReport": "teardown",
    "Leftovers": "teardown",
    "down": "teardown",
    "leftovers": "teardown",
    "agent_available": "tools",
    "NotYet": "wait",
    "WaitTimeout": "wait",
    "wait_until": "wait",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'wgmesh.lab' has no attribute {name!r}")
    return getattr(importlib.import_module(f"wgmesh.lab.{home}"), name)


__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_SITES",
    "DownReport",
    "Lab",
    "LabPlan",
    "LabStatus",
    "Leftovers",
    "Node",
    "NotYet",
    "Site",
    "WaitTimeout",
    "agent_available",
    "down",
    "leftovers",
    "plan_lab",
    "up",
    "wait_until",
]
