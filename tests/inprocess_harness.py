"""Harness for the API tests that need no real process: `create_app` on a SQLite file in a temporary
directory (or a PostgreSQL database, `Started.database`), served in the test's own interpreter through Starlette's TestClient.

`InProcessCoordinator` has the test-facing interface of `coordinator_harness.Coordinator` (start/stop,
`running()`, admin/node/anonymous clients, `db`, `log`, `admin_token`, `extra`), so a test moves between the
two by its fixture alone. What only a real process shows (the port, start-up, init, restart, signals, the
embedded relay) stays with `Coordinator`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from coordinator_harness import Started
from starlette.exceptions import StarletteDeprecationWarning

# Starlette 1.x prefers httpx2 for its TestClient; the project and these tests speak httpx (the clients
# are httpx.Client either way), so the notice says nothing about what is tested here.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", "Using `httpx` with `starlette.testclient`", StarletteDeprecationWarning
    )
    from starlette.testclient import TestClient

from wgmesh import ipam
from wgmesh.coordinator.app import Settings, create_app, create_metrics_app
from wgmesh.coordinator.handlers.context import Context
from wgmesh.coordinator.main import _parser, _upgrade, parse_relay
from wgmesh.coordinator.ratelimit import RateLimits
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store
from wgmesh.errors import WgmeshError
from wgmesh.logs import KeyValueFormatter
from wgmesh.models import Network

BASE_URL = "http://testserver"
# The address the app sees as the client, as over loopback (public IPs and X-Forwarded-For depend on it).
CLIENT = ("127.0.0.1", 50000)


class SharedLoopClient(TestClient):
    """A TestClient on the coordinator's running event loop (its portal).

    Entering it starts no second lifespan and no second loop: long polls, the change notifier and the
    requests of every client (and thread) then meet on one loop, as in the real server.
    """

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        # A timeout means nothing without a socket (TestClient warns about it); the tests' own
        # deadlines (threads joined with a timeout) bound what waits.
        kwargs.pop("timeout", None)
        return super().request(method, url, **kwargs)


@dataclass
class InProcessCoordinator(Started):
    """The coordinator's ASGI app on a SQLite file, started as `wgmesh-coordinator serve` starts it."""

    url: str = BASE_URL
    _server: TestClient | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)
    _handler: logging.Handler | None = field(default=None, repr=False)
    _level: int = field(default=logging.NOTSET, repr=False)

    def start(self) -> None:
        """Open (and initialise or upgrade) the database, build the app and run its lifespan."""
        assert self._server is None, "already running"
        self._handler, self._level = _log_to(self.log)
        try:
            registry = self._open()
            self._server = TestClient(
                create_app(registry, self._settings()),
                base_url=BASE_URL,
                raise_server_exceptions=False,  # a 500 answer, as a client of the real server gets
                client=CLIENT,
            )
            self._server.__enter__()
        except BaseException:
            self.stop()
            raise

    def _open(self) -> Registry:
        """The registry on the database as `serve` opens it: upgraded, initialised from the admin token if new."""
        self._store = store = Store(self.db_url)
        registry = Registry(store)
        _upgrade(store)
        if not store.is_initialised():
            if self.admin_token is None:
                raise WgmeshError(f"database {self.db} is not initialised")
            registry.initialise(Network(), self.admin_token)
        store.check_schema()
        if self.admin_token is not None:
            registry.ensure_admin_token(self.admin_token)
        return registry

    def _settings(self) -> Settings:
        """The Settings of the coordinator's own flags in `extra`; the embedded relay needs a process."""
        args = _parser().parse_args(list(self.extra))
        if args.relay:
            raise ValueError("--relay runs a relay beside the server: use coordinator_harness.Coordinator")
        return Settings(
            trusted_proxies=[ipam.parse_cidr(c) for c in args.trusted_proxy],
            relays=[parse_relay(text) for text in args.announce_relay],
            limits=RateLimits.parse(args.rate_limit),
        )

    def stop(self) -> None:
        """End the lifespan, release the database and the log file."""
        server, self._server = self._server, None
        if server is not None:
            server.__exit__(None, None, None)
        store, self._store = self._store, None
        if store is not None:
            store.close()
        handler, self._handler = self._handler, None
        if handler is not None:
            logger = logging.getLogger("wgmesh")
            logger.removeHandler(handler)
            logger.setLevel(self._level)
            handler.close()

    def context(self) -> Context:
        """The running application's handler context (its pacer, its notifier)."""
        assert self._server is not None, "not running"
        found = self._server.app.state.context  # type: ignore[attr-defined]
        assert isinstance(found, Context)
        return found

    def _client(self, headers: dict[str, str]) -> SharedLoopClient:
        assert self._server is not None and self._server.portal is not None, "not running"
        client = SharedLoopClient(
            self._server.app, base_url=BASE_URL, headers=headers, raise_server_exceptions=False, client=CLIENT
        )
        client.portal = self._server.portal
        return client

    def admin(self, token: str | None = None) -> SharedLoopClient:
        return self._client({"Authorization": f"Bearer {token or self.admin_token}"})

    def node(self, credential: str) -> SharedLoopClient:
        return self._client({"Authorization": f"Bearer {credential}"})

    def anonymous(self) -> SharedLoopClient:
        return self._client({})

    def scraper(self) -> SharedLoopClient:
        assert self._server is not None and self._server.portal is not None, "not running"
        client = SharedLoopClient(
            create_metrics_app(self._server.app),
            base_url=BASE_URL,
            raise_server_exceptions=False,
            client=CLIENT,
        )
        client.portal = self._server.portal
        return client


def _log_to(path: Path) -> tuple[logging.Handler, int]:
    """The coordinator's key=value log lines into `path`, as the process writes them to its log file;
    returns the handler and the logger's level before, to restore."""
    handler = logging.FileHandler(path)
    handler.setFormatter(KeyValueFormatter())
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("wgmesh")
    before = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler, before
