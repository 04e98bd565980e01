"""The record file of a lab: what it is made of and which processes it started, so `down` works after a crash."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic import ValidationError as PydanticError

from wgmesh.errors import WgmeshError
from wgmesh.lab.layout import DEFAULT_HA_PREEMPT_AFTER, STATE_ROOT, Database, HaReturn, LabPlan, plan_lab
from wgmesh.models import Model, PrefixField
from wgmesh.secure_files import write_private

Role = Literal["coordinator", "agent", "relay", "database"]


class ProcessRecord(Model):
    """A process the lab started; (pid, start_ticks) identifies it even after the pid is reused."""

    role: Role
    node: str
    pid: int
    start_ticks: int
    log: str


class LabState(Model):
    """Everything `down`, `status`, `env` and `add-site` need to know about a running lab."""

    name: str
    slot: int
    loopback_port: int
    sites: int
    backend: str
    agents: bool
    admin_token: str
    # Labs recorded before issue 16 kept one token for every site; it is no longer used (each site's
    # token allows its own LAN, `site_tokens`) but still read, so `down` works on such a record.
    enroll_token: str | None = None
    # Each site's enrollment token (by site index), allowing that site's LAN (route approval, issue 16).
    site_tokens: dict[int, str] = Field(default_factory=dict)
    # Whether the lab runs the hub's relay (False when wgmesh-relay was not installed at `up`).
    relay: bool = False
    # Where the registry lives, and how many coordinators and relays run (issue 17); the defaults keep
    # records written before them readable.
    db: Database = "sqlite"
    coordinators: int = 1
    relays: int = 1
    # Sites with a second gateway `gwIb` (issue 18), the enrollment token of each (by site; it allows no
    # subnet: an HA claim is approved by the lab as an admin would), and the agents' preemption rule.
    ha_sites: list[int] = Field(default_factory=list)
    ha_tokens: dict[int, str] = Field(default_factory=dict)
    ha_preempt_after: float = DEFAULT_HA_PREEMPT_AFTER
    ha_return: HaReturn = "route-table"
    # The LANs `--lan` gave (issue 20: VPCs whose CIDRs overlap), by site; every other site has 10.I.0.0/24.
    # Kept so that every later command rebuilds the same plan; empty in records written before them.
    lans: dict[int, PrefixField] = Field(default_factory=dict)
    # The coordinator's relay-ticket public key (base64), the relays' --coordinator-key.
    relay_key: str | None = None
    # The coordinator's pin (`sha256:…`, printed by `init`): how the lab's own clients trust its HTTPS.
    coordinator_pin: str | None = None
    # The switches in force: gateways whose underlay UDP is dropped, UDP rate limits, P2P turned off.
    blocked_udp: list[int] = Field(default_factory=list)
    throttled_udp: dict[int, str] = Field(default_factory=dict)
    p2p_off: list[int] = Field(default_factory=list)
    # Pairs of sites whose gateways exchange no TCP on the underlay (lower site first, sorted); the default
    # keeps records written before the switch readable.
    blocked_tcp: list[tuple[int, int]] = Field(default_factory=list)
    # The cloud-like switches (issue 13): MTUs other than 1500 by site, VPC hosts whose security group
    # drops inbound ICMP unreachables. Defaults keep state files written before them readable.
    lan_mtu: dict[int, int] = Field(default_factory=dict)
    underlay_mtu: dict[int, int] = Field(default_factory=dict)
    sg_drop_icmp: list[int] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    processes: list[ProcessRecord] = Field(default_factory=list)

    def plan(self) -> LabPlan:
        """The lab's plan as it stands."""
        return plan_lab(
            self.name,
            self.sites,
            self.slot,
            self.loopback_port,
            db=self.db,
            coordinators=self.coordinators,
            relays=self.relays,
            ha_sites=self.ha_sites,
            ha_preempt_after=self.ha_preempt_after,
            ha_return=self.ha_return,
            lans=self.lans,
        )

    def record(self, entry: ProcessRecord) -> None:
        """Remember a process, replacing any earlier one with the same role and node."""
        self.processes = [p for p in self.processes if (p.role, p.node) != (entry.role, entry.node)]
        self.processes.append(entry)

    def process(self, node: str) -> ProcessRecord | None:
        """The process recorded for `node` (`hub` is the first coordinator, `db` the PostgreSQL server)."""
        return next((p for p in self.processes if p.node == node), None)


def state_path(name: str, root: Path = STATE_ROOT) -> Path:
    """Where lab `name` keeps its state file."""
    return root / name / "state.json"


def load(name: str, root: Path = STATE_ROOT) -> LabState | None:
    """The state of lab `name`, or None when there is none."""
    path = state_path(name, root)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return LabState.model_validate_json(text)
    except PydanticError as exc:
        raise WgmeshError(
            f"lab state {path} is unreadable: {exc.errors()[0]['msg']}", code="lab_state"
        ) from exc


def save(state: LabState, root: Path = STATE_ROOT) -> None:
    """Write the state atomically, readable by root only (it holds the admin token)."""
    path = state_path(state.name, root)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, state.model_dump_json(indent=2).encode())


def all_states(root: Path = STATE_ROOT) -> list[LabState]:
    """The state of every lab on this machine, skipping unreadable files."""
    found = []
    for path in sorted(root.glob("*/state.json")):
        with contextlib.suppress(WgmeshError):
            state = load(path.parent.name, root)
            if state is not None:
                found.append(state)
    return found


@contextlib.contextmanager
def machine_lock(root: Path = STATE_ROOT) -> Iterator[None]:
    """Serialise slot allocation between labs started at the same time."""
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
