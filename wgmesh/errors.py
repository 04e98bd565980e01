"""The one exception tree of wgmesh, and the one map between it and the API's error answers.

Each class carries its API `code` and HTTP `status`; the coordinator answers `{"error": {"code", "message"}}`
with them, and `from_answer` turns such an answer back into the same class on the client side (agent, CLI,
lab). The API and the CLI turn the tree into messages in one place each (coordinator/handlers/errors.py,
entrypoint.py).
"""

from __future__ import annotations


class WgmeshError(Exception):
    """Root of every error wgmesh raises on purpose."""

    code: str = "error"
    status: int = 500
    # The more precise codes it is raised with under a status another class shares (see error_class).
    also: tuple[str, ...] = ()

    def __init_subclass__(
        cls, *, code: str | None = None, status: int | None = None, also: tuple[str, ...] = ()
    ) -> None:
        # Code and status as class keywords: one line per class says how it travels over the API.
        super().__init_subclass__()
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status
        cls.also = also

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            # An instance may name the case more precisely (`duplicate_name` for a ConflictError).
            self.code = code


class ValidationError(WgmeshError, code="invalid", status=422):
    """Input that is well-formed JSON but not acceptable (bad CIDR, key, name, …)."""


class MalformedRequestError(WgmeshError, code="malformed_json", status=400):
    """A request body that is not JSON, or not an object."""


class PayloadTooLargeError(WgmeshError, code="payload_too_large", status=413):
    """A request body over the size limit."""


class RequestTimeoutError(WgmeshError, code="request_timeout", status=408):
    """A request body that did not arrive in time (it held a turn others wait for)."""


class ConflictError(WgmeshError, code="conflict", status=409):
    """The request collides with existing state (duplicate name or key, overlapping route)."""


class NotFoundError(WgmeshError, code="not_found", status=404):
    """The named object does not exist."""


class AuthError(WgmeshError, code="unauthorized", status=401):
    """Missing, unknown or unusable credentials or tokens."""


class ForbiddenError(WgmeshError, code="forbidden", status=403):
    """Valid credentials that may not do this."""


class ExhaustedError(WgmeshError, code="exhausted", status=409, also=("overlay_exhausted",)):
    """A pool (overlay addresses) has nothing left to give."""


class BackendError(WgmeshError, code="backend"):
    """A data-plane backend (netlink, UAPI socket, nftables) failed."""


class UnreachableError(WgmeshError, code="unreachable", status=503):
    """A service did not answer or could not serve: refused, timeout, TLS or protocol failure, 5xx."""

    retry_after: float | None = None
    """Seconds the service asked the client to wait (`Retry-After`), when it said so."""
    unsent: bool = False
    """True when the request surely did nothing (the connection was refused, or the service refused it
    before acting: `database_unavailable`): safe to send again to another coordinator, whatever it was."""


class RateLimitedError(UnreachableError, code="rate_limited", status=429):
    """Too many requests from one address (enrollments, logins, failed credentials): try again later.

    An UnreachableError too, so that every client waits it out as it waits out an absent coordinator; the
    answer's `Retry-After` says for how long (`retry_after`, seconds, when the client read it).
    """


class StoreError(UnreachableError, code="store", status=503, also=("database_unavailable", "commit_unknown")):
    """The database is unusable (missing schema, wrong schema version), or out of reach
    (`database_unavailable`: the coordinator still serves long-polls from memory and refuses writes).

    An UnreachableError too: to a client, a coordinator without its database is one that cannot serve, and
    an agent waits for it as for one that does not answer.
    """


class IdentityError(UnreachableError, code="coordinator_identity"):
    """The coordinator's TLS identity is not one this client trusts (another key, an untrusted chain).

    An UnreachableError: the agent keeps its data plane on the cached netmap as for an absent coordinator
    (and says why). Refused like bad input by the console programs (exit 2). Never an API answer: it is
    found before any request is sent.
    """


# The classes an API answer can name, each under its status; the first of a status is what an answer of that
# status means when its code names no class of that status (`duplicate_name` under 409 is a ConflictError).
ANSWERS: tuple[type[WgmeshError], ...] = (
    MalformedRequestError,
    AuthError,
    ForbiddenError,
    NotFoundError,
    ConflictError,
    ExhaustedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ValidationError,
    UnreachableError,
    RateLimitedError,
    StoreError,
)
_BY_STATUS: dict[int, type[WgmeshError]] = {c.status: c for c in reversed(ANSWERS)}
_BY_CODE: dict[tuple[int, str], type[WgmeshError]] = {
    (c.status, code): c for c in ANSWERS for code in (c.code, *c.also)
}


RETRY_LATER = frozenset({408, 429})
"""4xx answers that mean "not now" rather than "not this request": a client tries again later."""


def error_class(status: int, code: str | None) -> type[WgmeshError]:
    """The class an API answer with this HTTP status and error code stands for.

    The code decides between classes that share a status (`exhausted`, `overlay_exhausted` or `conflict`
    under 409); any other code takes its status's class. Every other 5xx is an UnreachableError (the
    service could not serve the request, whatever it says), so a client that waits out an absent
    coordinator waits this out too; so are 408 and 429, which a proxy in front of it answers for "not now".
    """
    if code is not None and (status, code) in _BY_CODE:
        return _BY_CODE[status, code]
    if status >= 500 or status in RETRY_LATER:
        return UnreachableError
    return _BY_STATUS.get(status, WgmeshError)


def from_answer(status: int, code: str | None, message: str) -> WgmeshError:
    """The exception for an error answer; `code` None for one without a wgmesh error body.

    It carries the answer's own status, which a class standing for a range (5xx) or the root (a 4xx no
    class names, such as 405) does not know.
    """
    error = error_class(status, code)(message, code=code or "http_error")
    error.status = status
    return error
