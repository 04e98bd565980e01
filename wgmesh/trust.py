"""How the agent, the CLI and the lab trust the coordinator's TLS: by pin, by a CA file, or by the system.

A pinned connection checks the presented chain itself right after the handshake, inside it as far as the
HTTP client can tell: a mismatch fails the connection before a byte of the request (and so of a bearer
token) is sent. A pin matches when it names the leaf's key (the coordinator's own self-signed identity),
or a CA certificate of the chain that the leaf verifiably chains to, for the URL's host, with that CA as
the only trust anchor (`--tls-cert` with a CA's pin; see wgmesh/pins.py on why the chain must be checked).

Without a pin, verification is the ordinary one against a CA file or the system's store, and
`SSL_CERT_FILE` / `SSL_CERT_DIR` are honoured (httpx's own default, certifi, would ignore them).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from wgmesh.errors import IdentityError, ValidationError
from wgmesh.pins import Pin


class PinMismatch(ssl.SSLCertVerificationError):
    """Raised inside the handshake: the presented chain proves none of the accepted pins."""

    def __init__(self, presented: Pin, accepted: Sequence[Pin]) -> None:
        super().__init__(
            f"presented key {presented}, not {' or '.join(map(str, accepted)) or 'a pinned one'}"
        )
        self.presented = presented
        self.accepted = tuple(accepted)


class UnreadableCertificate(ssl.SSLCertVerificationError):
    """Raised inside the handshake: the presented certificate cannot be read, so it proves no pin."""

    def __init__(self, cause: ValueError) -> None:
        super().__init__(f"presented a certificate that cannot be read ({cause})")
        self.verify_message = "unreadable certificate"


def _verifies(
    leaf: x509.Certificate, rest: list[x509.Certificate], anchor: x509.Certificate, host: str
) -> bool:
    try:
        subject: DNSName | IPAddress = IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = DNSName(host)
    verifier = PolicyBuilder().store(Store([anchor])).build_server_verifier(subject)
    try:
        verifier.verify(leaf, rest)
    except VerificationError:
        return False
    return True


def proven_pin(chain: Sequence[bytes], host: str, accepted: Sequence[Pin]) -> Pin | None:
    """The accepted pin the presented chain (DER, leaf first) proves for `host`, or None."""
    certs = [x509.load_der_x509_certificate(der) for der in chain]
    if not certs:
        return None
    leaf = Pin.of_certificate(certs[0])
    for pin in accepted:
        if pin.matches(leaf):
            return pin
    for pin in accepted:
        for anchor in certs[1:]:
            if pin.matches(Pin.of_certificate(anchor)) and _verifies(certs[0], certs[1:], anchor, host):
                return pin
    return None


def _presented_chain(sock: ssl.SSLSocket) -> list[bytes]:
    # Python 3.13 made the chain public; 3.11 and 3.12 have it on the underlying _ssl object.
    raw: list[Any] = (
        sock.get_unverified_chain()  # type: ignore[attr-defined,unused-ignore]
        if hasattr(sock, "get_unverified_chain")
        else sock._sslobj.get_unverified_chain()  # type: ignore[attr-defined]
    ) or []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in raw]  # type: ignore[attr-defined]


class PinnedContext(ssl.SSLContext):
    """A client context whose connections succeed only when the chain proves an accepted pin.

    `accepted` is asked at every handshake (the agent's set changes when a rotation is announced);
    `on_match` hears which pin a connection proved.
    """

    accepted: Callable[[], Sequence[Pin]]
    on_match: Callable[[Pin], None]

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        # The pin is checked on sockets only (_PinCheckingSocket); a memory-BIO connection (asyncio,
        # httpx.AsyncClient) would get CERT_NONE and no check at all, so it is refused outright.
        raise NotImplementedError("a pinned connection needs a socket (use the synchronous client)")


class _PinCheckingSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        context = self.context
        if not isinstance(context, PinnedContext):
            return
        accepted = list(context.accepted())
        chain = _presented_chain(self)
        try:
            found = proven_pin(chain, self.server_hostname or "", accepted)
            presented = Pin.of_certificate(chain[0]) if chain else Pin(bytes(32))
        except ValueError as exc:
            # OpenSSL took a certificate that `cryptography` cannot parse (with CERT_NONE nothing checked
            # it): a refusal like any other, not a crash of whoever connected.
            raise UnreadableCertificate(exc) from exc
        if found is None:
            raise PinMismatch(presented, accepted)
        context.on_match(found)


def pinned(
    accepted: Callable[[], Sequence[Pin]], on_match: Callable[[Pin], None] = lambda _pin: None
) -> ssl.SSLContext:
    """A context that trusts exactly the pinned keys (no CA store, no name check unless a CA pin needs one)."""
    context = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pin check above replaces the CA check
    context.sslsocket_class = _PinCheckingSocket
    context.accepted = accepted
    context.on_match = on_match
    return context


def with_ca(path: Path) -> ssl.SSLContext:
    """Ordinary verification against the CA certificates in `path` only."""
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise ValidationError(f"cannot load CA file {path}: {exc}", code="bad_ca") from exc


def system(env: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """Ordinary verification against `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the system's store."""
    env = os.environ if env is None else env
    cafile, capath = env.get("SSL_CERT_FILE") or None, env.get("SSL_CERT_DIR") or None
    try:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    except (OSError, ssl.SSLError) as exc:
        raise ValidationError(f"cannot load SSL_CERT_FILE {cafile}: {exc}", code="bad_ca") from exc


def for_client(pin: Pin | None, ca: Path | None, env: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """The CLI's and the lab's choice: the pin, else the CA file, else SSL_CERT_FILE or the system's store."""
    if pin is not None:
        return pinned(lambda: [pin])
    if ca is not None:
        return with_ca(ca)
    return system(env)


def refusal(url: str, exc: BaseException) -> IdentityError | None:
    """The one-line IdentityError a transport failure stands for, when it was a TLS trust failure."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, PinMismatch | UnreadableCertificate):
            return IdentityError(
                f"refusing coordinator {url}: it {cause.args[0]}; if its key was replaced on purpose, "
                "see 'rotate-identity' in docs/security.md"
            )
        if isinstance(cause, ssl.SSLCertVerificationError):
            return IdentityError(
                f"refusing coordinator {url}: its certificate is not trusted ({cause.verify_message}); "
                "give --pin sha256:… or --ca FILE"
            )
        cause = cause.__cause__ or cause.__context__
    return None
