"""`wgmesh-coordinator`: initialise the database, then serve the API."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from wgmesh import ipam, logs
from wgmesh.coordinator.app import Settings, create_app
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store
from wgmesh.entrypoint import run_console
from wgmesh.errors import ValidationError, WgmeshError
from wgmesh.models import Network

log = logging.getLogger("wgmesh.coordinator")

DEFAULT_DB = "sqlite:////var/lib/wgmesh/coordinator.db"
ADMIN_ENV = "WGMESH_ADMIN_TOKEN"


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[HOST]:PORT`) into its parts."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValidationError(f"--listen {text!r} must be HOST:PORT", code="invalid_listen")
    return host.strip("[]"), int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wgmesh-coordinator",
        description="wgmesh coordinator: node registry, netmaps and the HTTP API.",
        epilog="Without a command it serves ('serve'). 'init' creates the database and prints an admin token.",
    )
    parser.add_argument("--db", default=os.environ.get("WGMESH_DB", DEFAULT_DB), help="database URL")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command")
    init = sub.add_parser("init", help="create the database and print an admin token once")
    init.add_argument("--overlay", default="100.96.0.0/16", help="overlay network CIDR")
    init.add_argument("--network", default="default", help="network name")
    init.add_argument("--p2p", choices=["auto", "off"], default="auto", help="network-wide P2P policy")
    serve = sub.add_parser("serve", help="serve the API (the default)")
    for p in (parser, serve):
        p.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to listen on")
        p.add_argument(
            "--trusted-proxy",
            action="append",
            default=[],
            metavar="CIDR",
            help="honour X-Forwarded-For from these addresses (repeatable)",
        )
    return parser


def run(argv: Sequence[str]) -> int:
    """Run the coordinator command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logs.setup(args.log_level)
    store = Store(args.db)
    registry = Registry(store)
    admin = os.environ.get(ADMIN_ENV) or None
    if args.command == "init":
        network = Network(name=args.network, overlay_cidr=str(ipam.parse_cidr(args.overlay)), p2p=args.p2p)
        token = registry.initialise(network, admin)
        if token is not None:
            print(f"admin token (shown once, store it safely): {token}")
        elif admin is not None:
            print(f"database ready; admin token taken from {ADMIN_ENV}")
        else:
            print("database already initialised; existing admin tokens are unchanged")
        return 0
    if not store.is_initialised():
        if admin is None:
            raise WgmeshError(
                f"database {args.db} is not initialised: run 'wgmesh-coordinator init' or set {ADMIN_ENV}"
            )
        registry.initialise(Network(), admin)
    store.check_schema()
    if admin is not None:
        registry.ensure_admin_token(admin)
    host, port = parse_listen(args.listen)
    settings = Settings(trusted_proxies=[ipam.parse_cidr(c) for c in args.trusted_proxy])
    app = create_app(registry, settings)
    import uvicorn  # noqa: PLC0415 - only the serving path needs it

    log.info("listening", extra=logs.kv(host=host, port=port, db=store.engine.url.render_as_string()))
    # proxy_headers=False: uvicorn would otherwise take X-Forwarded-For from 127.0.0.1 as the client
    # address; only --trusted-proxy (client_address in app.py) decides that.
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        log_level="warning",
        access_log=False,
        lifespan="on",
        proxy_headers=False,
        # open dashboard event streams and long polls must not hold a SIGTERM up
        timeout_graceful_shutdown=5,
    )
    return 0


def main() -> None:
    """Console entry point: bad usage exits 2, failures exit 1, each with one line."""
    run_console("wgmesh-coordinator", run)
