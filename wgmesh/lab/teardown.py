"""Tearing a lab down: find everything under its name, end its processes by pid, remove the rest.

Works from the state file when there is one and from names alone when there is not, so it also cleans
up after a crash; running it twice is harmless.
"""

from __future__ import annotations

import logging
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from wgmesh.errors import WgmeshError
from wgmesh.lab import procs, system
from wgmesh.lab.layout import RELAY_PORT, STATE_ROOT, owns, plan_lab, validate_name
from wgmesh.lab.postgres import ClusterPaths
from wgmesh.lab.record import LabState, load
from wgmesh.logs import kv

log = logging.getLogger("wgmesh.lab")


@dataclass
class Leftovers:
    """What exists on the machine under a lab's name."""

    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    nft_table: bool = False
    state: bool = False

    def any(self) -> bool:
        """Whether anything at all is left."""
        return bool(self.namespaces or self.links or self.sockets or self.nft_table or self.state)

    def describe(self) -> str:
        """A short summary for messages."""
        parts = [
            f"{len(items)} {what}"
            for items, what in (
                (self.namespaces, "namespace(s)"),
                (self.links, "link(s)"),
                (self.sockets, "WireGuard socket(s)"),
            )
            if items
        ]
        if self.nft_table:
            parts.append("an nftables table")
        if self.state:
            parts.append("a state directory")
        return ", ".join(parts)


def leftovers(name: str, root: Path = STATE_ROOT) -> Leftovers:
    """Everything carrying lab `name`'s prefix, plus its nftables table and state directory."""
    validate_name(name)
    table = plan_lab(name, 1).nft_table
    return Leftovers(
        namespaces=[n for n in system.namespaces() if owns(name, n)],
        links=[n for n in system.links() if owns(name, n)],
        sockets=[str(p) for p in system.wg_sockets(f"{name}-")],
        nft_table=system.nft_has_table("ip", table),
        state=(root / name).exists(),
    )


@dataclass
class DownReport:
    """What `down` removed."""

    processes: int = 0
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    nft_table: bool = False
    state: bool = False

    def removed_anything(self) -> bool:
        """Whether there was anything to remove."""
        return bool(
            self.processes or self.namespaces or self.links or self.sockets or self.nft_table or self.state
        )


def down(name: str, root: Path = STATE_ROOT) -> DownReport:
    """Remove every process, namespace, link, nftables table, socket and file of lab `name`; idempotent."""
    validate_name(name)
    system.require_root()
    report = DownReport()
    try:
        state = load(name, root)
    except WgmeshError as exc:
        # A damaged state file must not keep the rest from going; names and namespaces still find it.
        log.warning("lab state unreadable; removing by name only", extra=kv(lab=name, error=exc.message))
        state = None
    recorded = state.processes if state else []
    ids = {rec.node: procs.ProcessId(rec.pid, rec.start_ticks) for rec in recorded}
    # Agents first, gracefully, so none of them reconfigures anything while the rest goes.
    agents = [ids[r.node] for r in recorded if r.role == "agent"]
    report.processes += len(procs.terminate(agents, grace=3.0))
    # Then whatever else lives in the lab's namespaces: wireguard-go, commands from `lab exec`, ...
    owned_ns = [n for n in system.namespaces() if owns(name, n)]
    # A few rounds, since a process may fork while we look; one that survived all of them would keep
    # its namespace alive after the name is gone, so it is reported.
    for _ in range(3):
        inside = [
            p for n in owned_ns for pid in system.netns_pids(n) if (p := procs.identity(pid)) is not None
        ]
        if not inside:
            break
        report.processes += len(procs.terminate(inside, grace=3.0))
    else:
        stuck = [pid for n in owned_ns for pid in system.netns_pids(n)]
        if stuck:
            log.warning("processes survive in lab namespaces", extra=kv(lab=name, pids=stuck))
    # Then the coordinator and the relay: the recorded ones, and whatever listens on the lab's hub
    # address (one started just before a crash, before its pid was written down).
    hub = [ids[r.node] for r in recorded if r.role in ("coordinator", "relay")]
    for address in _hub_addresses(name, state):
        for port in (plan_lab(name, 1).api_port, RELAY_PORT):
            for pid in system.listener_pids(address, port):
                found = procs.identity(pid)
                if found is not None and found not in hub:
                    hub.append(found)
    # Short grace: requests still in progress are not worth waiting for, the lab's data is about to go.
    report.processes += len(procs.terminate(hub, grace=2.0))
    # The database last, once its clients are gone: SIGINT is PostgreSQL's fast shutdown. The recorded
    # postmaster, and the one its pid file names (started just before a crash, before it was recorded) if
    # that pid runs postgres on this lab's data directory.
    database = [ids[r.node] for r in recorded if r.role == "database"]
    cluster = ClusterPaths(root / name / "pg")
    postmaster = cluster.postmaster_pid()
    running = procs.identity(postmaster) if postmaster is not None else None
    if running is not None and running not in database and cluster.runs(procs.cmdline(running.pid)):
        database.append(running)
    report.processes += len(procs.terminate(database, grace=10.0, sig=signal.SIGINT))
    for ns in owned_ns:
        system.delete_namespace(ns)
        report.namespaces.append(ns)
    # A veth normally goes with its namespace, but the kernel frees namespaces asynchronously.
    for link in sorted(system.links(), key=lambda n: n.endswith("-br")):
        if owns(name, link):
            system.delete_link(link)
            report.links.append(link)
    table = plan_lab(name, 1).nft_table
    if system.nft_has_table("ip", table):
        system.nft_delete_table("ip", table)
        report.nft_table = True
    for sock in system.wg_sockets(f"{name}-"):
        system.remove_file(sock)
        report.sockets.append(str(sock))
    if (root / name).exists():
        shutil.rmtree(root / name, ignore_errors=True)
        report.state = True
    log.info(
        "lab down",
        extra=kv(
            lab=name,
            processes=report.processes,
            namespaces=len(report.namespaces),
            links=len(report.links),
            sockets=len(report.sockets),
        ),
    )
    return report


def _hub_addresses(name: str, state: LabState | None) -> list[str]:
    if state is not None:
        return [str(address) for address in state.plan().hub_addresses]
    return system.link_ipv4(plan_lab(name, 1).bridge)
