"""Following the netmap: long-poll the coordinator, hand each new netmap on, cache it on disk.

The cache is what keeps the data plane up across a coordinator outage and an agent restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from wgmesh import netmap_delta
from wgmesh.agent.backoff import Backoff
from wgmesh.agent.client import CoordinatorClient
from wgmesh.agent.state import StateDir
from wgmesh.errors import (
    AuthError,
    IdentityError,
    NotFoundError,
    UnreachableError,
    ValidationError,
    WgmeshError,
)
from wgmesh.logs import kv
from wgmesh.models import NetMap

log = logging.getLogger("wgmesh.agent.sync")

LONG_POLL_WAIT = 25.0


class NetmapFollower:
    """Calls `on_netmap` for every netmap newer than the last one, from the cache first."""

    def __init__(
        self,
        client: CoordinatorClient,
        state: StateDir,
        on_netmap: Callable[[NetMap], None],
        *,
        on_reachability: Callable[[bool], None] = lambda _ok: None,
        stop: threading.Event | None = None,
        rotate_key: Callable[[], NetMap] | None = None,
    ) -> None:
        self.client = client
        self.rotate_key = rotate_key
        """Carries out a key rotation the current netmap asks for; answers the netmap with the new key."""
        self.state = state
        self.on_netmap = on_netmap
        self.on_reachability = on_reachability
        self.stop = stop or threading.Event()
        self.current: NetMap | None = None
        self.backoff = Backoff()
        self.rotate_backoff = Backoff()
        self.rotate_after = 0.0
        self.changes = True
        """Whether the coordinator answers netmap changes (until it says it does not)."""

    def restore(self) -> NetMap | None:
        """Apply the cached netmap (fail-static start); returns it, or None if there is none."""
        cached = self.state.cached_netmap()
        if cached is not None:
            log.info("applying cached netmap", extra=kv(version=cached.version, peers=len(cached.peers)))
            self.accept(cached, cache=False)
        return cached

    def accept(self, netmap: NetMap, *, cache: bool = True) -> None:
        """Hand a netmap to the data plane, then cache it."""
        self.on_netmap(netmap)
        self.current = netmap
        if cache:
            self.state.save_netmap(netmap)

    def poll_once(self, wait: float = LONG_POLL_WAIT) -> bool:
        """One long-poll; True when a new netmap was applied. Raises on coordinator errors."""
        since = self.current.version if self.current else -1
        netmap = self._next_netmap(since, wait)
        self.on_reachability(True)
        if netmap is None:
            return False
        self.accept(netmap)
        return True

    def _next_netmap(self, since: int, wait: float) -> NetMap | None:
        """The next netmap: from its change to the one held, or whole from a coordinator that predates
        changes (found once: its 404 for the path)."""
        if self.changes:
            try:
                update = self.client.netmap_changes(since, wait)
            except NotFoundError as exc:
                if exc.code != "not_found":
                    raise
                log.info("coordinator sends whole netmaps only (no netmap changes)")
                self.changes = False
            else:
                if update is None:
                    return None
                try:
                    return netmap_delta.merge(self.current, update)
                except ValidationError as exc:
                    # Not for the netmap held (a cache another coordinator's version overtook): ask whole.
                    log.warning(
                        "netmap change not applicable; asking for it whole", extra=kv(error=exc.message)
                    )
                    update = self.client.netmap_changes(-1, 0)
                    return None if update is None else netmap_delta.merge(None, update)
        return self.client.netmap(since, wait)

    def rotate_if_asked(self) -> None:
        """Carry out the key rotation the current netmap asks for, when due.

        Here, between polls, and not inside `accept`: the netmap the rotation answers is accepted in
        order. A failure never stops the following: the rotation is tried again after a back-off.
        """
        if self.rotate_key is None or self.current is None or not self.current.rotate_key:
            return
        if time.monotonic() < self.rotate_after:
            return
        try:
            netmap = self.rotate_key()
        except WgmeshError as exc:
            delay = self.rotate_backoff.next_delay(
                exc.retry_after if isinstance(exc, UnreachableError) else None
            )
            self.rotate_after = time.monotonic() + delay
            log.warning(
                "key rotation failed; the old key stays",
                extra=kv(code=exc.code, error=exc.message, retry_in=round(delay, 1)),
            )
            return
        self.rotate_backoff.reset()
        self.accept(netmap)

    def run(self) -> None:
        """Follow until `stop` is set, backing off while the coordinator is away."""
        while not self.stop.is_set():
            try:
                self.poll_once()
                self.backoff.reset()
                # Only right after the coordinator answered: the rotation sets the new key on the
                # interface before it asks, which must not happen against an absent coordinator (a
                # cached netmap asking for it at start, an outage) and cut the tunnels it keeps up.
                self.rotate_if_asked()
            except IdentityError as exc:
                # A coordinator with another key is no coordinator: keep the data plane on the cached
                # netmap, as for an absent one, and say plainly why.
                self.on_reachability(False)
                delay = self.backoff.next_delay()
                log.error(
                    "coordinator refused: it is not the pinned identity; the data plane keeps the cached netmap",
                    extra=kv(error=exc.message, retry_in=round(delay, 1)),
                )
                self.stop.wait(delay)
            except UnreachableError as exc:
                self.on_reachability(False)
                delay = self.backoff.next_delay(exc.retry_after)
                log.warning("coordinator unreachable", extra=kv(error=exc.message, retry_in=round(delay, 1)))
                self.stop.wait(delay)
            except AuthError as exc:
                # Deleted node or revoked credential: keep the data plane as it is and keep asking.
                self.on_reachability(True)
                delay = self.backoff.next_delay()
                log.error(
                    "coordinator refused the credential",
                    extra=kv(error=exc.message, retry_in=round(delay, 1)),
                )
                self.stop.wait(delay)
            except WgmeshError as exc:
                delay = self.backoff.next_delay()
                log.error(
                    "netmap not applied", extra=kv(code=exc.code, error=exc.message, retry_in=round(delay, 1))
                )
                self.stop.wait(delay)
