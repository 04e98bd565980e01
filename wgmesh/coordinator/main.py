"""`wgmesh-coordinator`: initialise the database, then serve the API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError as PydanticValidationError

from wgmesh import __version__, ipam, logs, malloc
from wgmesh.api_client import check_url
from wgmesh.coordinator import identity, migrate
from wgmesh.coordinator.app import Settings, create_app, create_metrics_app
from wgmesh.coordinator.ratelimit import RateLimits
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store, redacted
from wgmesh.entrypoint import run_console
from wgmesh.errors import ValidationError, WgmeshError
from wgmesh.models import Network, RelayInfo
from wgmesh.pins import PIN_LINE, Pin
from wgmesh.relay import tickets
from wgmesh.relay.identity import RelayIdentity
from wgmesh.relay.revocation import DEFAULT_PULL_INTERVAL
from wgmesh.relay.server import RelayConfig, RelayServer
from wgmesh.values import Endpoint, P2PPolicy

log = logging.getLogger("wgmesh.coordinator")

DEFAULT_DB = "sqlite:////var/lib/wgmesh/coordinator.db"
METRICS_LISTEN = "127.0.0.1:9585"
"""Where /metrics is served by default: loopback, since it names every node (docs/metrics.md)."""
ADMIN_ENV = "WGMESH_ADMIN_TOKEN"
GRACEFUL_SHUTDOWN = 5
"""Seconds a stopping coordinator lets open requests finish before it cuts them (held long polls and event
streams end at once: serving.Server)."""
KEEP_ALIVE = 35
"""Seconds an idle connection stays open: longer than the agent keeps one (api_client.KEEP_IDLE, 30 s, itself
longer than the 10 s between reports), so that each report reuses its connection instead of a new TLS
handshake, and the agent is the one that closes an idle connection; uvicorn's 5 s closed connections as
requests went out on them (13,417 long-polls of a 5,000-node run, docs/performance.md)."""
GC_THRESHOLDS = (50_000, 20, 10)
"""The cyclic collector's thresholds (Python's: 700, 10, 10). Every version makes O(nodes) objects that
live a while (snapshots, netmaps, diffs), so with Python's a collection ran every 700 of them and a full
one every few versions: at 3,000 nodes 49 of an enrollment's 130 ms (benchmarks/, docs/performance.md)."""


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[HOST]:PORT`, port 0: any free one) into its parts."""
    try:
        return Endpoint.parse(text, port_zero=True).address
    except ValidationError:
        raise ValidationError(f"--listen {text!r} must be HOST:PORT", code="invalid_listen") from None


def parse_relay(text: str) -> RelayInfo:
    """`[ID=]tcp://HOST:PORT` or `[ID=]tls://HOST:PORT[#sha256:PIN]`; the id defaults to HOST:PORT."""
    ident, sep, url = text.partition("=")
    if not sep:
        ident, url = "", text
    url, hashed, pin = url.partition("#")
    try:
        return RelayInfo(id=ident or url.partition("://")[2], url=url, pin=pin if hashed else None)
    except PydanticValidationError as exc:
        detail = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ValidationError(f"--announce-relay {text!r}: {detail}", code="invalid_relay") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wgmesh-coordinator",
        description="wgmesh coordinator: node registry, netmaps and the HTTP API.",
        epilog="Without a command it serves ('serve'). 'init' creates the database and prints an admin token.",
    )
    parser.add_argument("--db", default=os.environ.get("WGMESH_DB", DEFAULT_DB), help="database URL")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="info", choices=logs.LEVELS)
    sub = parser.add_subparsers(dest="command")
    init = sub.add_parser("init", help="create the database and print an admin token once")
    init.add_argument("--overlay", default="100.96.0.0/16", help="overlay network CIDR")
    init.add_argument("--network", default="default", help="network name")
    init.add_argument("--p2p", choices=get_args(P2PPolicy), default="auto", help="network-wide P2P policy")
    sub.add_parser(
        "relay-key", help="print the public key relays verify tickets with (wgmesh-relay --coordinator-key)"
    )
    pin = sub.add_parser("pin", help="print the pin (sha256:…) clients trust this coordinator by")
    pin.add_argument("--tls-cert", help="the pin of this chain's last certificate (as serve --tls-cert)")
    rotate = sub.add_parser(
        "rotate-identity",
        help="replace the coordinator's key: --stage announces the next one, --activate switches to it",
    )
    step = rotate.add_mutually_exclusive_group(required=True)
    step.add_argument("--stage", action="store_true", help="make the next key; netmaps announce its pin")
    step.add_argument("--activate", action="store_true", help="serve the staged key from the next start")
    move = sub.add_parser(
        "migrate",
        help="copy the registry (everything in it) from one database to another, empty one, and check it",
    )
    move.add_argument("--from", dest="source", required=True, metavar="URL", help="the database to copy")
    move.add_argument("--to", dest="target", required=True, metavar="URL", help="an empty database")
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
        p.add_argument(
            "--announce-relay",
            action="append",
            default=[],
            metavar="[ID=]URL",
            help="a relay agents may use, tls://HOST:PORT#sha256:PIN (the key 'wgmesh-relay pin' prints; "
            "without #PIN verified by the CA store) or tcp://HOST:PORT (repeatable)",
        )
        p.add_argument(
            "--relay",
            metavar="HOST:PORT",
            help="also run a relay in this process (announced to agents unless HOST is a wildcard)",
        )
        p.add_argument(
            "--metrics-listen",
            default=METRICS_LISTEN,
            metavar="HOST:PORT|off",
            help=f"serve Prometheus /metrics here, not on the API's port (default {METRICS_LISTEN}; it names "
            "every node, so keep it off the internet); off: nowhere",
        )
        p.add_argument(
            "--rate-limit",
            action="append",
            default=[],
            metavar="KIND=BURST/PER_SECOND",
            help="per source address: enroll (default 60/1), login (20/0.2) or failures, answers 401 "
            "(100/1); KIND=off turns one off (repeatable; docs/security.md)",
        )
        p.add_argument(
            "--tls-cert",
            metavar="FILE",
            help="serve this certificate chain (PEM, leaf first, issuing CA last; the pin is the CA's) "
            "instead of the registry's own identity",
        )
        p.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
        p.add_argument(
            "--insecure-http",
            action="store_true",
            help="serve plain HTTP, for a TLS-terminating proxy on this host (loopback --listen only); "
            "X-Forwarded-Proto from --trusted-proxy then counts",
        )
        p.add_argument(
            "--public-pin",
            metavar="sha256:HEX",
            help="with --insecure-http: the pin of the key (or CA) the proxy presents, for tokens to carry",
        )
        p.add_argument(
            "--public-url",
            action="append",
            default=[],
            metavar="URL",
            help="a URL agents reach this coordinator at, carried in enrollment tokens (repeatable; "
            "default: the URL the token was requested at)",
        )
        p.add_argument(
            "--relay-tls-cert",
            help="TLS certificate (PEM) for --relay (default: a key kept in the registry, pinned by agents)",
        )
        p.add_argument("--relay-tls-key", help="TLS private key (PEM) for --relay")
        p.add_argument(
            "--relay-id",
            metavar="ID",
            help="the id --relay is announced with (tickets name it; default HOST:PORT, needed with a "
            "wildcard HOST announced by --announce-relay ID=…)",
        )
        p.add_argument(
            "--relay-plain-tcp",
            action="store_true",
            help="--relay serves plain TCP, not TLS (only where the path is trusted)",
        )
    return parser


def run(argv: Sequence[str]) -> int:
    """Run the coordinator command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logs.setup(args.log_level)
    if args.command == "migrate":  # two databases of its own, not --db
        return _migrate(args.source, args.target)
    store = Store(args.db)
    registry = Registry(store)
    admin = os.environ.get(ADMIN_ENV) or None
    if args.command == "relay-key":
        _upgrade(store)
        store.check_schema()
        print(registry.relay_public_key())
        return 0
    if args.command == "pin":
        if args.tls_cert:
            print(identity.from_chain(Path(args.tls_cert)))
            return 0
        _upgrade(store)
        store.check_schema()
        print(identity.ensure(store).pin)
        return 0
    if args.command == "rotate-identity":
        _upgrade(store)
        store.check_schema()
        if args.stage:
            staged = identity.stage(store)
            print(f"next pin (announced to agents now; activate once they all have it): {staged.pin}")
        else:
            active = identity.activate(store)
            print(f"pin (served from each coordinator's next start): {active.pin}")
        return 0
    if args.command == "init":
        network = Network(name=args.network, overlay_cidr=ipam.parse_cidr(args.overlay), p2p=args.p2p)
        _upgrade(store)
        token = registry.initialise(network, admin)
        print(f"{PIN_LINE}{identity.ensure(store).pin}")
        if token is not None:
            print(f"admin token (shown once, store it safely): {token}")
        elif admin is not None:
            print(f"database ready; admin token taken from {ADMIN_ENV}")
        else:
            print("database already initialised; existing admin tokens are unchanged")
        return 0
    _upgrade(store)
    if not store.is_initialised():
        if admin is None:
            raise WgmeshError(
                f"database {redacted(args.db)} is not initialised: run 'wgmesh-coordinator init' or set "
                f"{ADMIN_ENV}"
            )
        registry.initialise(Network(), admin)
    store.check_schema()
    if admin is not None:
        registry.ensure_admin_token(admin)
    _warn_about_old_tokens(registry)
    host, port = parse_listen(args.listen)
    relays = [parse_relay(text) for text in args.announce_relay]
    relay_config = _embedded_relay(args, registry)
    if relay_config is not None and relay_config.host not in ("0.0.0.0", "::"):
        where = Endpoint(relay_config.host, relay_config.port)
        own = relay_config.identity
        scheme = "tls" if relay_config.tls_cert or own else "tcp"
        pin = str(own.pin) if own is not None else None
        relays.append(RelayInfo(id=relay_config.relay_id, url=f"{scheme}://{where}", pin=pin))
    try:
        tickets.check_relay_ids([r.id for r in relays])
    except ValidationError as error:
        raise ValidationError(f"announced relays: {error.message}", code="invalid_relay") from None
    tls = _tls(args, host, store)
    _warn_without_proxy(args)
    settings = Settings(
        trusted_proxies=[ipam.parse_cidr(c) for c in args.trusted_proxy],
        relays=relays,
        limits=RateLimits.parse(args.rate_limit),
        pin=tls.pin if tls is not None else (Pin.parse(args.public_pin) if args.public_pin else None),
        public_urls=[check_url(u) for u in args.public_url],
        forwarded_proto=tls is None,
    )
    app = create_app(registry, settings)
    # What was made so far (modules, schemas, the app) lives as long as the process: frozen, no full
    # collection walks it again; and collections come ~70 times less often (GC_THRESHOLDS).
    gc.collect()  # start-up's garbage, so that freezing keeps none of it for good
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    malloc.map_large_blocks()  # before serving: the blocks a burst frees go back to the system (malloc.py)
    metrics_socket = bind_metrics(args.metrics_listen)
    import uvicorn  # noqa: PLC0415 - only the serving path needs it
    import uvloop  # noqa: PLC0415

    from wgmesh.coordinator.serving import HttpProtocol, Server  # noqa: PLC0415 - uvicorn's, as above

    log.info(
        "listening",
        extra=logs.kv(
            host=host,
            port=port,
            scheme="https" if tls is not None else "http",
            pin=settings.pin,
            db=store.engine.url.render_as_string(),
        ),
    )
    # proxy_headers=False: uvicorn would otherwise take X-Forwarded-For from 127.0.0.1 as the client
    # address; only --trusted-proxy (client_address in handlers/auth.py) decides that.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        log_level="warning",
        access_log=False,
        lifespan="on",
        proxy_headers=False,
        # open dashboard event streams and long polls must not hold a SIGTERM up
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        timeout_keep_alive=KEEP_ALIVE,
        http=HttpProtocol,  # idle keep-alive connections dropped at shutdown (serving.py)
    )
    if tls is not None:
        with identity.served_files(tls) as (certfile, keyfile):
            config.ssl_certfile, config.ssl_keyfile = str(certfile), str(keyfile)
            config.load()  # reads the key now, so its file lives no longer than this block
    relay = RelayServer(relay_config) if relay_config is not None else None
    if relay is not None:
        app.state.context.metrics.attach_relay(relay)  # its metrics on the coordinator's /metrics
    metrics: Any = None
    if metrics_socket is not None:
        metrics = uvicorn.Server(
            uvicorn.Config(
                create_metrics_app(app), loop="none", log_level="warning", access_log=False, lifespan="off"
            )
        )
        # The API's server owns SIGTERM and SIGINT; this one stops when it does (_serve).
        metrics.capture_signals = contextlib.nullcontext
    server = Server(config, on_stop=app.state.context.notifier.stop)  # held long polls answer at once
    uvloop.run(_serve(server, relay, metrics, metrics_socket, registry))
    return 0


def _migrate(source: str, target: str) -> int:
    """Copy the registry, then say what moved: a line per table and a summary (URLs without passwords)."""
    copied = migrate.migrate(source, target)
    for table in copied:
        next_id = f" next_id={table.next_id}" if table.next_id is not None else ""
        print(f"table={table.table} rows={table.rows} sha256={table.digest[:16]}{next_id}")
    print(
        f"migrated {sum(t.rows for t in copied)} rows in {len(copied)} tables from {redacted(source)} to "
        f"{redacted(target)}; row counts and digests match"
    )
    return 0


def bind_metrics(text: str) -> socket.socket | None:
    """The bound socket of `--metrics-listen HOST:PORT` (None for `off`): a taken port fails the start with
    one line, not a coordinator without its metrics."""
    if text.strip() == "off":
        return None
    try:
        host, port = Endpoint.parse(text, port_zero=True).address
    except ValidationError:
        raise ValidationError(
            f"--metrics-listen {text!r} must be HOST:PORT or off", code="invalid_listen"
        ) from None
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise WgmeshError(f"--metrics-listen {text}: {exc.strerror}", code="metrics_listen") from None
    sock.listen(128)  # a scrape before the server's first turn waits in the queue instead of being refused
    bound = sock.getsockname()
    log.info("metrics listening", extra=logs.kv(host=bound[0], port=bound[1]))
    return sock


def _warn_about_old_tokens(registry: Registry) -> None:
    """Say which admin tokens from before schema version 4 still work: each WGMESH_ADMIN_TOKEN value of
    those versions added a token, and nobody can tell which are still wanted (`wgmesh admin-tokens
    revoke NAME` the others)."""
    old = [t.name for t in registry.admin_tokens.list() if t.source == "upgrade" and t.revoked_at is None]
    if old:
        log.warning(
            "admin tokens from before named tokens still work: revoke those not in use",
            extra=logs.kv(names=",".join(old)),
        )


def _warn_without_proxy(args: argparse.Namespace) -> None:
    """Behind a proxy without --trusted-proxy every client is the proxy's address: one budget for all."""
    if args.insecure_http and not args.trusted_proxy:
        log.warning(
            "--insecure-http without --trusted-proxy: every client counts as the proxy's address, so one "
            "client spending the failures budget gets everyone answered 429",
            extra=logs.kv(hint="add --trusted-proxy 127.0.0.1/32"),
        )


def _upgrade(store: Store) -> None:
    """Bring an existing database to this version's schema (a new one is created at it)."""
    for step in store.upgrade():
        log.info("database schema upgraded", extra=logs.kv(version=step))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _tls(args: argparse.Namespace, host: str, store: Store) -> identity.Identity | None:
    """What the API serves: `--tls-cert/--tls-key`, else the registry's identity; None for --insecure-http."""
    if args.insecure_http:
        if args.tls_cert or args.tls_key:
            raise ValidationError(
                "--insecure-http serves no certificate: drop --tls-cert/--tls-key", code="invalid_tls"
            )
        if not _is_loopback(host):
            raise ValidationError(
                f"--insecure-http is only for a TLS-terminating proxy on this host: listen on a loopback "
                f"address, not {host}",
                code="invalid_tls",
            )
        return None
    if args.public_pin:
        raise ValidationError(
            "--public-pin goes with --insecure-http (otherwise the pin is known)", code="invalid_tls"
        )
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValidationError("--tls-cert and --tls-key go together", code="invalid_tls")
    if args.tls_cert:
        return identity.from_files(Path(args.tls_cert), Path(args.tls_key))
    return identity.ensure(store)


def _embedded_relay(args: argparse.Namespace, registry: Registry) -> RelayConfig | None:
    """The relay `--relay` asks for, verifying tickets with this coordinator's own key; TLS with the
    registry's relay key unless a certificate or plain TCP is asked for."""
    if not args.relay:
        if args.relay_tls_cert or args.relay_tls_key or args.relay_plain_tcp:
            raise ValidationError(
                "--relay-tls-cert/--relay-tls-key/--relay-plain-tcp need --relay", code="invalid_relay"
            )
        return None
    if bool(args.relay_tls_cert) != bool(args.relay_tls_key):
        raise ValidationError("--relay-tls-cert and --relay-tls-key go together", code="invalid_relay")
    if args.relay_plain_tcp and args.relay_tls_cert:
        raise ValidationError(
            "--relay-plain-tcp serves no TLS: give it or --relay-tls-cert/--relay-tls-key",
            code="invalid_relay",
        )
    try:
        host, port = parse_listen(args.relay)
    except ValidationError:
        raise ValidationError(f"--relay {args.relay!r} must be HOST:PORT", code="invalid_relay") from None
    wildcard = host in ("0.0.0.0", "::")
    if not args.relay_id and wildcard:
        log.warning(
            "--relay on a wildcard address without --relay-id: it refuses the tickets agents get "
            "(they name the relays announced); give --relay-id as --announce-relay names it"
        )
    return RelayConfig(
        host=host,
        port=port,
        relay_id=args.relay_id or ("" if wildcard else str(Endpoint(host, port))),
        coordinator_key=registry.relay_public_key(),
        tls_cert=Path(args.relay_tls_cert) if args.relay_tls_cert else None,
        tls_key=Path(args.relay_tls_key) if args.relay_tls_key else None,
        identity=None
        if args.relay_plain_tcp or args.relay_tls_cert
        else RelayIdentity.from_key(registry.relay_tls_key(), source="the registry's relay key"),
    )


async def _serve(
    server: Any,
    relay: RelayServer | None,
    metrics: Any | None,
    metrics_socket: socket.socket | None,
    registry: Registry,
) -> None:
    """The API, /metrics on its own listener and, with `--relay`, the relay on the same event loop; uvicorn
    owns SIGTERM for all three through the API's server."""
    side = asyncio.create_task(metrics.serve([metrics_socket])) if metrics is not None else None
    try:
        if relay is None:
            await server.serve()
            return
        await relay.start()  # a taken port fails the start with one line, not a coordinator without its relay
        log.info("relay listening", extra=logs.kv(host=relay.config.host, port=relay.port))
        revoking = asyncio.create_task(_revoke_into(relay, registry))
        try:
            await server.serve()
        finally:
            revoking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await revoking
            await relay.stop()
    finally:
        if side is not None and metrics is not None:
            metrics.should_exit = True
            await side


async def _revoke_into(relay: RelayServer, registry: Registry) -> None:
    """The embedded relay's revocation list, read from the registry as a standalone relay pulls it."""
    while True:
        try:
            relay.revoke(await asyncio.to_thread(registry.relay_revocations))
        except Exception as error:  # the database is away: keep the last list, as a relay does
            log.warning("revocation list not read", extra=logs.kv(error=str(error)))
        await asyncio.sleep(DEFAULT_PULL_INTERVAL)


def main() -> None:
    """Console entry point: bad usage exits 2, failures exit 1, each with one line."""
    run_console("wgmesh-coordinator", run)
