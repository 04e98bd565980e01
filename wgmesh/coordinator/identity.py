"""The coordinator's TLS identity: its key and certificate, kept in the registry, and how they are served.

One identity per registry (not per process), stored beside the PSK master: every coordinator of a database
presents the same key, so a pin taken from one holds on the others. The certificate is self-signed and
never expires (RFC 5280's 99991231235959Z): clients trust the key through its pin, not the certificate's
name or dates. `--tls-cert/--tls-key` serve a real certificate instead (`from_files`); its pin is then
that of the chain's last certificate, the issuing CA, so renewals under the same CA keep every pin.

Rotation: `stage` makes the next key and the netmaps announce its pin (NetMap.coordinator_next_pin);
`activate` makes it the identity that coordinators serve from their next start. Agents accept a switch
only to a pin they were told of in advance (agent/coordinator_pin.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, select, update

from wgmesh import selfsigned
from wgmesh.coordinator import schema
from wgmesh.coordinator.store import Store
from wgmesh.errors import ValidationError, WgmeshError
from wgmesh.pins import Pin
from wgmesh.secure_files import write_private

COMMON_NAME = "wgmesh coordinator"


@dataclass(frozen=True)
class Identity:
    """A private key and its certificate chain (leaf first), both PEM."""

    key_pem: str = field(repr=False)
    cert_pem: str

    @property
    def chain(self) -> list[x509.Certificate]:
        """The certificates, leaf first."""
        return x509.load_pem_x509_certificates(self.cert_pem.encode())

    @property
    def pin(self) -> Pin:
        """What clients pin: the key of the chain's last certificate (the leaf itself when self-signed)."""
        return Pin.of_certificate(self.chain[-1])


def generate(now: datetime | None = None) -> Identity:
    """A new ECDSA P-256 key and a self-signed certificate for it."""
    key_pem = selfsigned.generate_key()
    cert = selfsigned.certificate(selfsigned.load_key(key_pem, "a new key"), COMMON_NAME, now=now)
    return Identity(key_pem.decode(), cert.public_bytes(serialization.Encoding.PEM).decode())


def from_files(cert: Path, key: Path) -> Identity:
    """`--tls-cert` (the chain, leaf first, issuing CA last) and `--tls-key`, checked to belong together."""
    try:
        cert_pem = cert.read_text()
        key_pem = key.read_text()
    except OSError as exc:
        raise ValidationError(f"cannot read {exc.filename}: {exc.strerror}", code="invalid_tls") from exc
    try:
        chain = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError as exc:
        raise ValidationError(f"--tls-cert {cert} holds no PEM certificate", code="invalid_tls") from exc
    try:
        private = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValidationError(
            f"--tls-key {key} holds no unencrypted PEM private key", code="invalid_tls"
        ) from exc
    if Pin.of_key(private.public_key()) != Pin.of_certificate(chain[0]):
        raise ValidationError(
            f"--tls-key {key} is not the key of the first certificate in {cert}", code="invalid_tls"
        )
    return Identity(key_pem, cert_pem)


def from_chain(cert: Path) -> Pin:
    """The pin of a `--tls-cert` chain: its last certificate's key (the issuing CA's, or a lone leaf's)."""
    try:
        chain = x509.load_pem_x509_certificates(cert.read_bytes())
    except OSError as exc:
        raise ValidationError(f"cannot read {cert}: {exc.strerror}", code="invalid_tls") from exc
    except ValueError as exc:
        raise ValidationError(f"{cert} holds no PEM certificate", code="invalid_tls") from exc
    return Pin.of_certificate(chain[-1])


def _read(conn: Connection, *, staged: bool = False) -> Identity | None:
    t = schema.registry.c
    key_col, cert_col = (t.tls_next_key, t.tls_next_cert) if staged else (t.tls_key, t.tls_cert)
    row = conn.execute(select(key_col, cert_col)).one()
    return Identity(row[0], row[1]) if row[0] and row[1] else None


def ensure(store: Store) -> Identity:
    """The registry's identity, made now if it has none (a new or an upgraded database).

    Coordinators starting together on one database agree: the write only fills an empty slot.
    """
    with store.read() as conn:
        found = _read(conn)
    if found is not None:
        return found
    made = generate()
    with store.write(bump=False) as w:
        w.conn.execute(
            update(schema.registry)
            .where(schema.registry.c.tls_key.is_(None))
            .values(tls_key=made.key_pem, tls_cert=made.cert_pem)
        )
        current = _read(w.conn)
    assert current is not None
    return current


def next_pin(conn: Connection) -> Pin | None:
    """The pin of the staged next identity, announced in every netmap until it is activated."""
    staged = _read(conn, staged=True)
    return staged.pin if staged is not None else None


def stage(store: Store) -> Identity:
    """Make the next identity (replacing one staged before); the version bump sends it out in netmaps."""
    made = generate()
    with store.write() as w:
        w.conn.execute(update(schema.registry).values(tls_next_key=made.key_pem, tls_next_cert=made.cert_pem))
    return made


def activate(store: Store) -> Identity:
    """Make the staged identity the current one (served from each coordinator's next start)."""
    with store.write() as w:
        staged = _read(w.conn, staged=True)
        if staged is None:
            raise WgmeshError(
                "no identity is staged: run 'wgmesh-coordinator rotate-identity --stage' first, and let "
                "the agents fetch the netmap that announces it",
                code="nothing_staged",
            )
        w.conn.execute(
            update(schema.registry).values(
                tls_key=staged.key_pem, tls_cert=staged.cert_pem, tls_next_key=None, tls_next_cert=None
            )
        )
    return staged


@contextmanager
def served_files(identity: Identity) -> Iterator[tuple[Path, Path]]:
    """The identity as `(certfile, keyfile)` for the TLS server to load, in a private directory that is
    removed afterwards: the key lives on disk only while the server reads it."""
    directory = Path(tempfile.mkdtemp(prefix="wgmesh-tls-"))  # 0700
    try:
        cert, key = directory / "cert.pem", directory / "key.pem"
        write_private(cert, identity.cert_pem.encode())
        write_private(key, identity.key_pem.encode())
        yield cert, key
    finally:
        shutil.rmtree(directory, ignore_errors=True)
