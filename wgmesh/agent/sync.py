"""Following the netmap: long-poll the coordinator, hand each new netmap on, cache it on disk.

The cache is what keeps the data plane up across a coordinator outage and an agent restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from wgmesh.agent.backoff import Backoff
from wgmesh.agent.client import CoordinatorClient
from wgmesh.agent.state import StateDir
from wgmesh.errors import AuthError, IdentityError, UnreachableError, WgmeshError
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
        on_reachability: Callable[[bool], None] = lambda _ok: None,
        stop: threading.Event | None = None,
    ) -> None:
        self.client = client
        self.state = state
        self.on_netmap = on_netmap
        self.on_reachability = on_reachability
        self.stop = stop or threading.Event()
        self.current: NetMap | None = None
        self.backoff = Backoff()

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
        netmap = self.client.netmap(since, wait)
        self.on_reachability(True)
        if netmap is None:
            return False
        self.accept(netmap)
        return True

    def run(self) -> None:
        """Follow until `stop` is set, backing off while the coordinator is away."""
        while not self.stop.is_set():
            try:
                self.poll_once()
                self.backoff.reset()
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
