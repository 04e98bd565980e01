"""Network-namespace lab: a multi-site mesh on one machine for `make demo`, e2e tests and benchmarks.

`plan`, `impair` (switches that impair the underlay), `cloud` (switches that make a site look like a cloud
VPC: MTUs, a security group) and `converge` are pure; `system` and `procs` touch the machine; `control`
(build, run, wait) and `teardown` (down, even after a crash) tie them together.
"""

from wgmesh.lab.control import Lab, LabStatus, agent_available, up
from wgmesh.lab.plan import DEFAULT_NAME, DEFAULT_SITES, LabPlan, Node, Site, plan_lab
from wgmesh.lab.teardown import DownReport, Leftovers, down, leftovers
from wgmesh.lab.wait import NotYet, WaitTimeout, wait_until

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
