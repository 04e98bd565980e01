"""Enrollment tokens that carry the coordinator's pin and URLs, as kubeadm's and k3s's join tokens do.

`wgmesh1~<pin>~<urls>~<secret>`: the pin's 32 bytes and the space-separated URLs, each base64url
without padding, then the secret the coordinator checks (`wgt_ID.SECRET`). `~` occurs in none of the
parts. Only the secret is secret: the agent sends nothing else, and the coordinator never needs the rest.

A bare secret (a token from before pins) parses too, without pin or URLs: the agent then needs
`--coordinator` and `--coordinator-pin` (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field

from wgmesh.errors import ValidationError
from wgmesh.pins import Pin

PREFIX = "wgmesh1"
SEPARATOR = "~"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class JoinToken:
    """The secret, and where and whom the agent is to redeem it with."""

    secret: str = field(repr=False)
    pin: Pin | None = None
    urls: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.pin is None:
            return self.secret
        urls = _b64(" ".join(self.urls).encode())
        return SEPARATOR.join((PREFIX, _b64(self.pin.digest), urls, self.secret))

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        """A token with pin and URLs, or a bare secret; ValidationError for a damaged one."""
        text = text.strip()
        if not text.startswith(PREFIX + SEPARATOR):
            return cls(text)
        parts = text.split(SEPARATOR)
        if len(parts) != 4 or not parts[3]:
            raise ValidationError(
                "enrollment token is damaged (not wgmesh1~PIN~URLS~SECRET)", code="bad_token"
            )
        try:
            pin = Pin(_unb64(parts[1]))
            urls = tuple(_unb64(parts[2]).decode().split())
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise ValidationError(
                "enrollment token is damaged: its pin or URLs do not decode", code="bad_token"
            ) from None
        return cls(parts[3], pin, urls)


def with_identity(secret: str, pin: Pin, urls: Sequence[str]) -> str:
    """The token to hand out for `secret`."""
    return str(JoinToken(secret, pin, tuple(urls)))
