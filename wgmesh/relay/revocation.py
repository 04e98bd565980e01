"""Revoked relay tickets: the coordinator's list of deleted nodes, and how a relay proves who asks for it.

A deleted node's ticket stays valid until it expires (a day); the coordinator keeps a tombstone per deleted
node for that long (`relay_revocations`, schema version 7) and serves the list at
`GET /api/v1/relay/revocations`. A relay pulls it while the coordinator is reachable and refuses (and
disconnects) the tickets it names; when the coordinator is not reachable the relay keeps the last list and
goes on verifying tickets offline, so relayed traffic never depends on the coordinator being up.

The relay authenticates with the key agents pin it by: its bearer token is its id, the time, its public key
and an ECDSA signature over them, and the coordinator takes it only from a relay it announces with that
key's pin (`--announce-relay ID=tls://…#PIN`, or its own `--relay`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wgmesh import logs
from wgmesh.api_client import ApiClient
from wgmesh.errors import AuthError, ValidationError, WgmeshError
from wgmesh.models import RevocationList, RevokedTicket
from wgmesh.pins import Pin

log = logging.getLogger("wgmesh.relay")

TOKEN_PREFIX = "wgmesh-relay-1"  # noqa: S105 - a format tag, not a secret
MAX_SKEW = 120
"""Seconds a relay token's time may differ from the coordinator's: clocks differ, and a token replayed
within that window only fetches the same list again."""
DEFAULT_PULL_INTERVAL = 30.0
"""Seconds between pulls: a deleted node's ticket is refused within a minute."""
_DOMAIN = b"wgmesh-relay-revocations\x00"
PATH = "/api/v1/relay/revocations"


class Revocations:
    """The list a relay holds: which node's tickets no longer pass, replaced whole at each pull."""

    def __init__(self) -> None:
        self._before: dict[int, int] = {}

    def replace(self, entries: Iterable[RevokedTicket]) -> None:
        """Hold exactly `entries` from now on."""
        before: dict[int, int] = {}
        for entry in entries:
            before[entry.node_id] = max(before.get(entry.node_id, 0), entry.issued_before)
        self._before = before

    def revoked(self, node_id: int, issued_at: int) -> bool:
        """True if a ticket of `node_id` issued at `issued_at` is revoked."""
        before = self._before.get(node_id)
        return before is not None and issued_at <= before

    def __len__(self) -> int:
        return len(self._before)


# --- the relay's token ------------------------------------------------------------------------------


def relay_token(key_pem: bytes, relay_id: str, now: float) -> str:
    """The bearer token relay `relay_id` presents at `now`, signed with its TLS key (PEM, EC)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValidationError("the relay's TLS key must be an EC key to sign its revocation requests")
    stamp = str(int(now))
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = key.sign(_message(relay_id, stamp), ec.ECDSA(hashes.SHA256()))
    parts = (relay_id.encode("utf-8"), stamp.encode("ascii"), spki, signature)
    return ".".join([TOKEN_PREFIX, *(_b64url(p) for p in parts)])


def verify_relay_token(token: str, now: float, pins: Mapping[str, Pin]) -> str:
    """The id of the relay that signed `token`, if `pins` (announced relays by id) pins the key it signed
    with and its time is within MAX_SKEW of `now`; AuthError otherwise."""
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != TOKEN_PREFIX:
        raise AuthError("not a relay token", code="invalid_credentials")
    try:
        raw_id, raw_stamp, spki, signature = (_unb64url(p) for p in parts[1:])
        relay_id, stamp = raw_id.decode("utf-8"), raw_stamp.decode("ascii")
        key = serialization.load_der_public_key(spki)
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        raise AuthError("relay token is malformed", code="invalid_credentials") from None
    pin = pins.get(relay_id)
    if pin is None or not isinstance(key, ec.EllipticCurvePublicKey) or not pin.matches(Pin.of_key(key)):
        # One answer for an unknown relay and a wrong key: nothing to learn about which ids exist.
        raise AuthError(
            "relay token is not from a relay this coordinator announces", code="invalid_credentials"
        )
    try:
        key.verify(signature, _message(relay_id, stamp), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AuthError("relay token signature does not verify", code="invalid_credentials") from None
    if not stamp.isdigit() or abs(int(stamp) - now) > MAX_SKEW:
        raise AuthError(f"relay token time is over {MAX_SKEW} s off", code="invalid_credentials")
    return relay_id


def _message(relay_id: str, stamp: str) -> bytes:
    return _DOMAIN + relay_id.encode("utf-8") + b"\x00" + stamp.encode("ascii")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- the pull ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevocationPuller:
    """Where and how often a relay pulls the list, and what it signs its requests with."""

    urls: tuple[str, ...]
    """The coordinators of one registry, the preferred first: a pull moves to the next one that answers."""
    tls: ssl.SSLContext | None
    """Pinned like an agent's (wgmesh.trust), a CA file's, or None: the system's store."""
    relay_id: str
    key_pem: bytes
    interval: float = DEFAULT_PULL_INTERVAL

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValidationError("pulling revocations needs a coordinator URL (--coordinator)")
        if not self.relay_id:
            raise ValidationError("pulling revocations needs the relay's id (--relay-id)")
        if not self.interval > 0:
            raise ValidationError("the revocation pull interval must be above 0 seconds")
        relay_token(self.key_pem, self.relay_id, 0)  # an unusable key fails the start, not every pull

    def pull(self, client: ApiClient) -> tuple[str, list[RevokedTicket]]:
        """One pull (blocking) with a freshly signed token: the coordinator that answered and its list; a
        WgmeshError when none can be asked or one refuses."""
        client.bearer = relay_token(self.key_pem, self.relay_id, time.time())
        revoked = client.call("GET", PATH, RevocationList).revoked
        return client.url, revoked

    async def run(self, apply: Callable[[list[RevokedTicket]], None]) -> None:
        """Pull every `interval` until cancelled, handing each list to `apply` (on this loop). A failed
        pull keeps the last list: tickets are still verified offline, relayed traffic goes on.

        One client for every pull: it stays on the coordinator that last answered (wgmesh/failover.py), so
        a hung first coordinator costs one request deadline, not one per pull."""
        failing, used = False, None
        with ApiClient(self.urls, user_agent="wgmesh-relay", tls=self.tls) as client:
            while True:
                try:
                    url, revoked = await asyncio.to_thread(self.pull, client)
                except WgmeshError as error:
                    if not failing:
                        urls = ",".join(self.urls)
                        log.warning("revocation pull failed", extra=logs.kv(urls=urls, error=error.message))
                    failing = True
                else:
                    if failing:
                        log.info("revocation pull works again", extra=logs.kv(url=url))
                    elif url != used:  # the first pull, and each move to another coordinator
                        log.info("revocations pulled", extra=logs.kv(url=url, revoked=len(revoked)))
                    failing, used = False, url
                    apply(revoked)
                await asyncio.sleep(self.interval)
