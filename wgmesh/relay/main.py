"""`wgmesh-relay`: forward WireGuard datagrams over TLS (or plain TCP) between nodes holding coordinator tickets."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import resource
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from cryptography import x509

from wgmesh import __version__, logs, trust
from wgmesh.api_client import check_url
from wgmesh.entrypoint import run_console
from wgmesh.errors import ValidationError
from wgmesh.pins import Pin
from wgmesh.relay.identity import DEFAULT_STATE_DIR, KEY_FILE, RelayIdentity, load_or_create_key
from wgmesh.relay.revocation import DEFAULT_PULL_INTERVAL, RevocationPuller
from wgmesh.relay.server import (
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE,
    DEFAULT_PORT,
    DEFAULT_QUEUE_BYTES,
    RelayConfig,
    run_relay,
)
from wgmesh.relay.tickets import load_public_key
from wgmesh.values import Endpoint

log = logging.getLogger("wgmesh.relay")

PROG = "wgmesh-relay"
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"
RESERVED_DESCRIPTORS = 64
"""Descriptors kept beyond --max-connections: listener, metrics, logs, the revocation pull, and sockets
still in their TLS handshake (counted only once it completes)."""


class _Parser(argparse.ArgumentParser):
    """Usage errors become a ValidationError, so run_console prints one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        raise ValidationError(f"{message} (see '{self.prog} --help')", code="usage")


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[HOST]:PORT`, port 0: any free one) into its parts."""
    try:
        return Endpoint.parse(text, port_zero=True).address
    except ValidationError:
        raise ValidationError(f"--listen {text!r} must be HOST:PORT", code="invalid_listen") from None


def parse_metrics_listen(text: str) -> tuple[str, int]:
    """`--metrics-listen HOST:PORT` into its parts."""
    try:
        return parse_listen(text)
    except ValidationError:
        raise ValidationError(
            f"--metrics-listen {text!r} must be HOST:PORT or off", code="invalid_listen"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of `wgmesh-relay`."""
    parser = _Parser(
        prog=PROG,
        description="wgmesh relay: forwards WireGuard datagrams over TLS between nodes whose UDP is blocked.",
        epilog="Nodes authenticate with tickets signed by the coordinator and check the relay's key against "
        f"its pin ('{PROG} pin' prints it); see docs/relay-protocol.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to listen on (default {DEFAULT_LISTEN})"
    )
    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument(
        "--coordinator-key", metavar="KEY", help="the coordinator's relay-ticket public key (base64)"
    )
    key.add_argument("--coordinator-key-file", metavar="FILE", type=Path, help="read that key from FILE")
    parser.add_argument(
        "--relay-id",
        default="",
        metavar="ID",
        help="this relay's id, as the coordinator announces it: tickets must name it "
        "(default: --listen's HOST:PORT unless HOST is a wildcard)",
    )
    parser.add_argument(
        "--unnamed-tickets",
        choices=("accept", "refuse"),
        default="accept",
        help="tickets from coordinators before issue 16 name no relay: accept them while they last "
        "(a day after the coordinator's upgrade), then refuse (default accept)",
    )
    _add_identity_arguments(parser)
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="the PEM private key of --tls-cert")
    parser.add_argument(
        "--plain-tcp",
        action="store_true",
        help="serve plain TCP instead of TLS (tcp:// URLs; only where the path is trusted)",
    )
    parser.add_argument(
        "--max-frame",
        type=int,
        default=DEFAULT_MAX_PAYLOAD,
        metavar="N",
        help=f"largest frame payload in bytes; larger frames close the connection (default {DEFAULT_MAX_PAYLOAD})",
    )
    parser.add_argument(
        "--queue-bytes",
        type=int,
        default=DEFAULT_QUEUE_BYTES,
        metavar="N",
        help=f"send queue per connection; frames beyond it are dropped (default {DEFAULT_QUEUE_BYTES})",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="connections at once; more are closed with 'busy', and at most half may be without a hello "
        f"(default {DEFAULT_MAX_CONNECTIONS}; lowered to fit the open-files limit)",
    )
    parser.add_argument(
        "--max-unauthenticated-per-source",
        type=int,
        default=DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE,
        metavar="N",
        help="connections without a hello from one address "
        f"(default {DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE})",
    )
    parser.add_argument(
        "--max-buffered-bytes",
        type=int,
        default=DEFAULT_MAX_BUFFERED_BYTES,
        metavar="N",
        help=f"send queues of all connections together; frames beyond are dropped (default {DEFAULT_MAX_BUFFERED_BYTES})",
    )
    parser.add_argument(
        "--hello-timeout",
        type=float,
        default=DEFAULT_HELLO_TIMEOUT,
        metavar="SECONDS",
        help="time a connection has for its TLS handshake and hello before it is closed "
        f"(default {DEFAULT_HELLO_TIMEOUT:g})",
    )
    pull = parser.add_argument_group(
        "revocations",
        "Pull the coordinator's list of deleted nodes and refuse their tickets; the coordinator must "
        "announce this relay with its pin (--announce-relay ID=tls://HOST:PORT#PIN). Without the "
        "coordinator the relay goes on verifying tickets offline.",
    )
    pull.add_argument(
        "--coordinator",
        action="append",
        default=[],
        metavar="URL",
        help="the coordinator's https:// URL (default: no pull); repeat it for several coordinators of one "
        "registry: a pull uses the first that answers",
    )
    pull.add_argument(
        "--coordinator-pin", metavar="PIN", help="sha256:… of the coordinator's key, as agents pin it"
    )
    pull.add_argument(
        "--coordinator-ca", type=Path, metavar="FILE", help="verify the coordinator with this CA file"
    )
    pull.add_argument(
        "--revocation-interval",
        type=float,
        default=DEFAULT_PULL_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between pulls (default {DEFAULT_PULL_INTERVAL:g}: deleted nodes are refused within a minute)",
    )
    parser.add_argument(
        "--metrics-listen",
        default="off",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default off; e.g. 127.0.0.1:9587)",
    )
    parser.add_argument("--log-level", default="info", choices=logs.LEVELS)
    # For tests and benchmarks: the protocol fixes these at 10 s, 30 s and the stats line at a minute.
    parser.add_argument("--ping-after", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--dead-after", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("--stats-interval", type=float, default=60.0, help=argparse.SUPPRESS)
    return parser


def _add_identity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"keep the relay's TLS key in DIR/{KEY_FILE}, made on first start "
        f"(default {DEFAULT_STATE_DIR}; unused with --tls-cert or --plain-tcp)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve TLS with this PEM certificate chain instead of the relay's own key",
    )


def build_pin_parser() -> argparse.ArgumentParser:
    """The command line of `wgmesh-relay pin`."""
    parser = _Parser(
        prog=f"{PROG} pin",
        description="Print the pin agents check this relay's TLS key against (sha256:<hex>), making the "
        "key first if there is none; give it to the coordinator as --announce-relay ID=tls://HOST:PORT#PIN.",
    )
    _add_identity_arguments(parser)
    return parser


def print_pin(argv: Sequence[str]) -> int:
    """`wgmesh-relay pin`: the pin of the key the relay serves with (its own, or --tls-cert's leaf)."""
    args = build_pin_parser().parse_args(argv)
    if args.tls_cert is not None:
        try:
            pin = Pin.of_certificate(x509.load_pem_x509_certificate(args.tls_cert.read_bytes()))
        except (OSError, ValueError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise ValidationError(f"cannot read certificate --tls-cert {args.tls_cert}: {reason}") from None
    else:
        pin = _identity(args.state_dir).pin
    print(pin)
    return 0


def _identity(state_dir: Path) -> RelayIdentity:
    path = state_dir / KEY_FILE
    try:
        return RelayIdentity.from_key(load_or_create_key(path), source=f"relay key file {path}")
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValidationError(f"cannot keep the relay key in {path}: {reason}") from None


def _coordinator_key(args: argparse.Namespace) -> str:
    if args.coordinator_key is not None:
        value, source = str(args.coordinator_key), "--coordinator-key"
    else:
        path: Path = args.coordinator_key_file
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise ValidationError(f"cannot read --coordinator-key-file {path}: {reason}") from None
        source = f"--coordinator-key-file {path}"
    try:
        load_public_key(value)
    except ValidationError as error:
        raise ValidationError(f"{source}: {error.message}", code="invalid_key") from None
    return value


def config_from_args(args: argparse.Namespace) -> RelayConfig:
    """The relay configuration the parsed flags describe; ValidationError for unusable values."""
    host, port = parse_listen(args.listen)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValidationError("--tls-cert and --tls-key go together: give both or neither")
    if args.plain_tcp and args.tls_cert is not None:
        raise ValidationError("--plain-tcp serves no TLS: give it or --tls-cert/--tls-key, not both")
    # TLS unless asked not to: a certificate given, else the relay's own key (agents pin it).
    identity = None if args.plain_tcp or args.tls_cert is not None else _identity(args.state_dir)
    return RelayConfig(
        host=host,
        port=port,
        coordinator_key=_coordinator_key(args),
        relay_id=args.relay_id or _default_relay_id(host, port),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        identity=identity,
        max_payload=args.max_frame,
        queue_bytes=args.queue_bytes,
        max_connections=args.max_connections,
        max_unauthenticated_per_source=args.max_unauthenticated_per_source,
        max_buffered_bytes=args.max_buffered_bytes,
        accept_unnamed_tickets=args.unnamed_tickets == "accept",
        hello_timeout=args.hello_timeout,
        ping_after=args.ping_after,
        dead_after=args.dead_after,
    )


def puller_from_args(args: argparse.Namespace, config: RelayConfig) -> RevocationPuller | None:
    """The revocation pull the flags ask for (None without --coordinator), signing with the relay's key."""
    if not args.coordinator:
        if args.coordinator_pin or args.coordinator_ca:
            raise ValidationError("--coordinator-pin and --coordinator-ca need --coordinator")
        return None
    if args.coordinator_pin and args.coordinator_ca:
        raise ValidationError("--coordinator-pin or --coordinator-ca, not both")
    if config.identity is not None:
        key_pem = config.identity.key_pem
    elif config.tls_key is not None:
        try:
            key_pem = config.tls_key.read_bytes()
        except OSError as error:
            raise ValidationError(f"cannot read --tls-key {config.tls_key}: {error.strerror}") from None
    else:
        raise ValidationError("--coordinator needs TLS: the relay signs its pulls with the key agents pin")
    pin = Pin.parse(args.coordinator_pin) if args.coordinator_pin else None
    return RevocationPuller(
        urls=tuple(check_url(url) for url in args.coordinator),
        tls=trust.for_client(pin, args.coordinator_ca),
        relay_id=config.relay_id,
        key_pem=key_pem,
        interval=args.revocation_interval,
    )


def _default_relay_id(host: str, port: int) -> str:
    """HOST:PORT, the id a coordinator gives a relay announced without one; none for a wildcard address."""
    if host in ("0.0.0.0", "::") or port == 0:
        return ""
    return str(Endpoint(host, port))


def fit_descriptors(config: RelayConfig) -> RelayConfig:
    """Raise the open-files limit to what the connection cap needs (up to the hard limit), or lower the
    cap to fit it: a relay out of descriptors cannot even accept the node that would authenticate."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = config.max_connections + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        fitted = max(1, soft - RESERVED_DESCRIPTORS)
        log.warning(
            "connection cap lowered to fit the open-files limit",
            extra=logs.kv(max_connections=fitted, asked=config.max_connections, nofile=soft),
        )
        return dataclasses.replace(config, max_connections=fitted)
    return config


def run(argv: Sequence[str]) -> int:
    """Run the relay command line until SIGTERM/SIGINT (or print its pin); returns the exit status."""
    if list(argv[:1]) == ["pin"]:
        return print_pin(argv[1:])
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level)
    config = fit_descriptors(config_from_args(args))
    puller = puller_from_args(args, config)
    if args.stats_interval <= 0:
        raise ValidationError("--stats-interval must be above 0 seconds")
    import uvloop  # noqa: PLC0415 - the relay's event loop; importing it is only needed to serve

    metrics = None if args.metrics_listen == "off" else parse_metrics_listen(args.metrics_listen)
    uvloop.run(
        run_relay(config, stats_interval=args.stats_interval, metrics_listen=metrics, revocations=puller)
    )
    return 0


def main() -> None:
    """Console entry point: bad usage exits 2, failures exit 1, each with one line."""
    run_console(PROG, run)
