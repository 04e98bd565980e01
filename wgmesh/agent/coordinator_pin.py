"""The agent's trust in its coordinator: the pinned key, and the next one a rotation announced.

The first pin comes from the enrollment token (or `--coordinator-pin`) and is kept in the state directory
after the first contact that proves it; from then on it alone counts, whatever the token or flags say. A
coordinator presenting another key is refused (wgmesh.trust) like an unreachable one, with one clear
line. The one way to another key: the netmap announces it (`coordinator_next_pin`) while the old key is
still served, the agent keeps the announcement, and a coordinator that later proves the announced key is
accepted and becomes the pin.
"""

from __future__ import annotations

import logging
import ssl
import threading

from wgmesh import trust
from wgmesh.agent.state import CoordinatorPins, StateDir
from wgmesh.logs import kv
from wgmesh.models import NetMap
from wgmesh.pins import Pin

log = logging.getLogger("wgmesh.agent")


class CoordinatorTrust:
    """The pins the agent accepts, persisted in its state directory (0600)."""

    def __init__(self, state: StateDir, first: Pin | None) -> None:
        self.state = state
        self._lock = threading.Lock()
        stored = state.coordinator_pins()
        if stored is not None and first is not None and not stored.pin.matches(first):
            log.warning(
                "ignoring the given coordinator pin: the state directory holds the one this agent trusts",
                extra=kv(pinned=stored.pin, given=first),
            )
        self.pins = stored if stored is not None else (CoordinatorPins(first) if first is not None else None)
        self.saved = stored is not None

    def accepted(self) -> list[Pin]:
        """The pinned key, and the announced next one."""
        with self._lock:
            if self.pins is None:
                return []
            return [self.pins.pin] + ([self.pins.next] if self.pins.next is not None else [])

    def proven(self, pin: Pin) -> None:
        """A connection proved `pin`: keep it (the first contact), or switch to it (an announced rotation)."""
        with self._lock:
            if self.pins is None:
                return
            if pin.matches(self.pins.pin):
                if not self.saved:
                    self.state.save_coordinator_pins(self.pins)
                    self.saved = True
                    log.info("coordinator pinned", extra=kv(pin=pin))
                return
            old = self.pins.pin
            self.pins = CoordinatorPins(pin)
            self.state.save_coordinator_pins(self.pins)
            self.saved = True
        log.warning("coordinator key rotated to the announced one", extra=kv(old=old, new=pin))

    def announced(self, netmap: NetMap) -> None:
        """Keep the next key a netmap announces.

        A netmap without one does not withdraw it: after `rotate-identity --activate` the coordinators
        still serving the old key send exactly that until they restart with the new one.
        """
        if netmap.coordinator_next_pin is None:
            return
        said = Pin.parse(netmap.coordinator_next_pin)
        with self._lock:
            if self.pins is None or not self.saved or said in (self.pins.next, self.pins.pin):
                return
            self.pins = CoordinatorPins(self.pins.pin, said)
            self.state.save_coordinator_pins(self.pins)
        log.info("coordinator announced its next key", extra=kv(next=said))

    def context(self) -> ssl.SSLContext | None:
        """The TLS context for the coordinator: pinned, or None (the system's store) without a pin."""
        if self.pins is None:
            return None
        return trust.pinned(self.accepted, self.proven)
