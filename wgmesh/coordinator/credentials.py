"""The textual form of secrets handed out by the coordinator: `PREFIX_ID.SECRET`.

The id makes lookup cheap; only the secret part is hashed and compared in constant time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wgmesh.errors import AuthError

_FORM = re.compile(r"^(?P<prefix>[a-z]{3})_(?P<id>[0-9]{1,18})\.(?P<secret>[A-Za-z0-9_-]{20,128})$")


@dataclass(frozen=True, slots=True)
class Credential:
    """A parsed secret: its kind prefix, the row id it names and the secret itself."""

    prefix: str
    id: int
    secret: str

    def __repr__(self) -> str:
        return f"Credential(prefix={self.prefix!r}, id={self.id})"


def make_credential(prefix: str, row_id: int, secret: str) -> str:
    """The presentable form of a secret."""
    return f"{prefix}_{row_id}.{secret}"


def parse_credential(text: str, prefix: str, *, error: str = "enrollment token is not valid") -> Credential:
    """Parse a presented secret of kind `prefix`, or raise AuthError."""
    match = _FORM.fullmatch(text.strip())
    if match is None or match["prefix"] != prefix:
        code = "invalid_token" if prefix == "wgt" else "invalid_credential"
        raise AuthError(error, code=code)
    return Credential(prefix, int(match["id"]), match["secret"])
