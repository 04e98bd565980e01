"""The `--on-primary` hook: a command the agent runs when it becomes, or stops being, the member of an HA
group that carries the group's prefix, so that the cloud's route table sends the VPC's replies to it.

The command is split like a shell would (`shlex`) but run without one; it gets the event in its
environment (`WGMESH_HA_ROLE` primary|standby, `WGMESH_HA_PREFIX`, `WGMESH_HA_SITE`, `WGMESH_NODE`,
`WGMESH_HA_HOLDER`, `WGMESH_MESH_PREFIXES`). Runs are serialised on one thread, the latest event of each
prefix wins (one that is superseded before it ran never runs), and a failed run is tried again with
back-off until it succeeds or a newer event replaces it: a cloud API that fails once must not leave the
route table pointing at a dead gateway. Docs: docs/deploy.md ("HA gateways").
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
from collections.abc import Mapping
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
    """Runs the hook for each role change, one at a time, latest per prefix, retrying failures."""

    def __init__(self, argv: tuple[str, ...], stop: threading.Event) -> None:
        self.argv = argv
        self.stop = stop
        self._pending: dict[Prefix, RoleEvent] = {}
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="ha-hook", daemon=True)
        self.runs = 0
        self.failures = 0

    def start(self) -> None:
        self._thread.start()

    def changed(self, event: RoleEvent) -> None:
        """Queue `event`; it replaces one of the same prefix that has not run yet."""
        with self._wake:
            self._pending[event.prefix] = event
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._wake.notify()

    def _take(self) -> RoleEvent | None:
        with self._wake:
            while not self._pending and not self.stop.is_set():
                self._wake.wait(1.0)
            if self.stop.is_set():
                return None
            prefix = next(iter(self._pending))
            return self._pending.pop(prefix)

    def _run(self) -> None:
        while (event := self._take()) is not None:
            backoff = Backoff(initial=1.0, maximum=30.0)
            while not self.stop.is_set():
                if self._execute(event):
                    break
                self.stop.wait(backoff.next_delay())
                with self._wake:
                    newer = self._pending.pop(event.prefix, None)
                if newer is not None:
                    event = newer

    def _execute(self, event: RoleEvent) -> bool:
        self.runs += 1
        env: Mapping[str, str] = {**os.environ, **event.environment()}
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
