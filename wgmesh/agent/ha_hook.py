"""The `--on-primary` hook: a command the agent runs when it becomes, or stops being, the member of an HA
group that carries the group's prefix, so that the cloud's route table sends the VPC's replies to it.

The command is split like a shell would (`shlex`) but run without one; it gets the event in its
environment (`WGMESH_HA_ROLE` primary|standby, `WGMESH_HA_PREFIX`, `WGMESH_HA_SITE`, `WGMESH_NODE`,
`WGMESH_HA_HOLDER`, `WGMESH_MESH_PREFIXES`). Runs are serialised on one thread, the latest wanted role of each
prefix wins (one that is superseded before it ran never runs), and a failed run is tried again with
back-off until it succeeds (other prefixes are served meanwhile), and a primary's run is repeated every
minute: a cloud API that fails once, or a table rewritten behind its back, must not leave the route table
pointing at a dead gateway. Docs: docs/deploy.md ("HA gateways").
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from wgmesh.agent.backoff import Backoff
from wgmesh.errors import ValidationError
from wgmesh.logs import kv
from wgmesh.values import Prefix

log = logging.getLogger("wgmesh.agent.ha")

HOOK_TIMEOUT = 120.0
"""A hook still running after this is killed and counts as failed (cloud CLIs retry for about a minute)."""


def parse_command(text: str) -> tuple[str, ...]:
    """`--on-primary` as an argument vector, or ValidationError."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise ValidationError(f"--on-primary {text!r}: {exc}", code="invalid_config") from exc
    if not argv:
        raise ValidationError("--on-primary needs a command", code="invalid_config")
    return argv


@dataclass(frozen=True, slots=True)
class RoleEvent:
    """This gateway's role for one HA prefix changed."""

    prefix: Prefix
    role: str  # primary | standby
    site: str
    node: str
    holder: str
    mesh_prefixes: tuple[Prefix, ...]

    def signature(self) -> tuple[object, ...]:
        """What a run makes true: the role, and as primary the prefixes the VPC must send here."""
        return (self.role, self.mesh_prefixes if self.role == "primary" else ())

    def environment(self) -> dict[str, str]:
        return {
            "WGMESH_HA_ROLE": self.role,
            "WGMESH_HA_PREFIX": str(self.prefix),
            "WGMESH_HA_SITE": self.site,
            "WGMESH_NODE": self.node,
            "WGMESH_HA_HOLDER": self.holder,
            "WGMESH_MESH_PREFIXES": " ".join(map(str, self.mesh_prefixes)),
        }


class RoleHook:
    """Keeps the cloud's route table in line with this gateway's role for each HA prefix.

    The agent states the role it wants for each prefix on every path tick (`want`); one thread runs the
    hook when the role (or, as primary, the mesh's prefixes) differs from the last successful run, and
    again every `REASSERT` seconds while primary — a table someone else rewrote (a late run of another
    member's hook, a cut-off member's claim) is put right without any new event. A failed run is tried
    again with back-off per prefix; other prefixes are served meanwhile. A standby that never ran as
    primary runs nothing.
    """

    REASSERT = 60.0

    def __init__(
        self, argv: tuple[str, ...], stop: threading.Event, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.argv = argv
        self.stop = stop
        self.clock = clock
        self._wanted: dict[Prefix, RoleEvent] = {}
        self._done: dict[Prefix, tuple[tuple[object, ...], float]] = {}
        self._retry_at: dict[Prefix, float] = {}
        self._backoff: dict[Prefix, Backoff] = {}
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="ha-hook", daemon=True)
        self.runs = 0
        self.failures = 0

    def start(self) -> None:
        self._thread.start()

    def want(self, event: RoleEvent) -> None:
        """The role this gateway should have for `event.prefix` now; cheap when nothing changed."""
        with self._wake:
            before = self._wanted.get(event.prefix)
            self._wanted[event.prefix] = event
            if before is None or before.signature() != event.signature():
                self._retry_at.pop(event.prefix, None)
                self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._wake.notify()

    def due(self, now: float) -> RoleEvent | None:
        """The next run to make at `now`, if any (the runner's choice, exposed for tests)."""
        with self._wake:
            for prefix, event in self._wanted.items():
                if now < self._retry_at.get(prefix, 0.0):
                    continue
                done = self._done.get(prefix)
                if done is None:
                    if event.role == "primary":
                        return event
                elif done[0] != event.signature() or (
                    event.role == "primary" and now - done[1] >= self.REASSERT
                ):
                    return event
        return None

    def _run(self) -> None:
        while not self.stop.is_set():
            event = self.due(self.clock())
            if event is None:
                with self._wake:
                    self._wake.wait(0.5)
                continue
            ok = self._execute(event)
            with self._wake:
                if ok:
                    self._done[event.prefix] = (event.signature(), self.clock())
                    self._backoff.pop(event.prefix, None)
                else:
                    backoff = self._backoff.setdefault(event.prefix, Backoff(initial=1.0, maximum=30.0))
                    self._retry_at[event.prefix] = self.clock() + backoff.next_delay()

    def _execute(self, event: RoleEvent) -> bool:
        self.runs += 1
        # The agent's environment without its own WGMESH_ settings (a token could be among them).
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("WGMESH_")}
        env: Mapping[str, str] = {**inherited, **event.environment()}
        try:
            # The operator's own command, run without a shell.
            done = subprocess.run(
                self.argv, env=env, capture_output=True, text=True, timeout=HOOK_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.failures += 1
            log.error("ha hook failed", extra=kv(prefix=event.prefix, role=event.role, error=str(exc)))
            return False
        if done.returncode != 0:
            self.failures += 1
            log.error(
                "ha hook failed",
                extra=kv(
                    prefix=event.prefix,
                    role=event.role,
                    status=done.returncode,
                    stderr=done.stderr.strip()[-300:],
                ),
            )
            return False
        log.info("ha hook ran", extra=kv(prefix=event.prefix, role=event.role, holder=event.holder))
        return True
