"""A relay's TLS identity: a P-256 key kept across restarts and a self-signed certificate over it.

Agents pin the key, not the certificate (wgmesh/pins.py), so the certificate is made afresh at each start
and only the key is stored: in a 0600 file for `wgmesh-relay`, in the coordinator's registry for the
relay embedded in it. A relay with a certificate of its own (`--tls-cert`) does not use this module's key.
"""

from __future__ import annotations

import contextlib
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from wgmesh import selfsigned
from wgmesh.errors import ValidationError
from wgmesh.pins import Pin
from wgmesh.secure_files import ensure_private_dir, read_private, write_private

DEFAULT_STATE_DIR = Path("/var/lib/wgmesh-relay")
KEY_FILE = "relay-tls.key"
generate_key = selfsigned.generate_key


def load_or_create_key(path: Path) -> bytes:
    """The PEM key in `path`, made first (0600, in a 0700 directory) when there is none."""
    existing = read_private(path)
    if existing is not None:
        return existing
    ensure_private_dir(path.parent)
    # Another process may have made it meanwhile: then use that one, so both present one key.
    with contextlib.suppress(FileExistsError):
        write_private(path, generate_key(), replace=False)
    data = read_private(path)
    if data is None:  # pragma: no cover - removed between writing and reading
        raise ValidationError(f"relay key file {path} vanished while it was created")
    return data


@dataclass(frozen=True)
class RelayIdentity:
    """A private key (PEM) and the self-signed certificate a relay presents with it."""

    key_pem: bytes
    cert_pem: bytes

    @classmethod
    def from_key(
        cls, key_pem: bytes, *, source: str = "relay key", names: Sequence[x509.GeneralName] = ()
    ) -> RelayIdentity:
        """The identity of a stored P-256 key, with a fresh self-signed certificate; `names` become its
        subject alternative names, for clients that verify a name (agents checking the pin need none)."""
        key = selfsigned.load_key(key_pem, source)
        cert = selfsigned.certificate(key, "wgmesh relay", names=names)
        return cls(key_pem, cert.public_bytes(serialization.Encoding.PEM))

    @property
    def pin(self) -> Pin:
        """What agents are told to expect: the pin of this identity's public key."""
        return Pin.of_certificate(x509.load_pem_x509_certificate(self.cert_pem))

    def server_context(self) -> ssl.SSLContext:
        """A server TLS context presenting this identity."""
        context = server_context()
        # The ssl module loads keys from files only: a private directory that lives for this call.
        with tempfile.TemporaryDirectory(prefix="wgmesh-relay-tls.") as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            write_private(key, self.key_pem)
            cert.write_bytes(self.cert_pem)
            context.load_cert_chain(cert, key)
        return context


def server_context() -> ssl.SSLContext:
    """The relay's TLS settings, without a certificate yet."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def pinned_client_context() -> ssl.SSLContext:
    """A client context for a pinned relay: no CA or name check, as the key is checked against the pin
    right after the handshake (`refusal`), before a single byte (the ticket) is sent."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def refusal(presented: bytes | None, pin: Pin) -> str | None:
    """Why a relay that presented the DER certificate `presented` is refused under `pin`; None if it
    holds the pinned key."""
    if presented is None:
        return f"relay presented no certificate; the netmap pins {pin}"
    try:
        found = Pin.of_certificate(presented)
    except ValueError:
        return f"relay presented an unreadable certificate; the netmap pins {pin}"
    if found.matches(pin):
        return None
    return f"relay presented key {found}; the netmap pins {pin}"
