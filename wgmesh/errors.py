"""The one exception tree of wgmesh; the API and the CLI turn it into messages in one place each."""

from __future__ import annotations


class WgmeshError(Exception):
    """Root of every error wgmesh raises on purpose."""

    code = "error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ValidationError(WgmeshError):
    """Input that is well-formed JSON but not acceptable (bad CIDR, key, name, …)."""

    code = "invalid"
    status = 422


class MalformedRequestError(WgmeshError):
    """A request body that is not JSON, or not an object."""

    code = "malformed_json"
    status = 400


class PayloadTooLargeError(WgmeshError):
    """A request body over the size limit."""

    code = "payload_too_large"
    status = 413


class ConflictError(WgmeshError):
    """The request collides with existing state (duplicate name or key, overlapping route)."""

    code = "conflict"
    status = 409


class NotFoundError(WgmeshError):
    """The named object does not exist."""

    code = "not_found"
    status = 404


class AuthError(WgmeshError):
    """Missing, unknown or unusable credentials or tokens."""

    code = "unauthorized"
    status = 401


class ForbiddenError(WgmeshError):
    """Valid credentials that may not do this."""

    code = "forbidden"
    status = 403


class ExhaustedError(WgmeshError):
    """A pool (overlay addresses) has nothing left to give."""

    code = "exhausted"
    status = 409


class StoreError(WgmeshError):
    """The database is unusable (missing schema, wrong schema version)."""

    code = "store"
    status = 503


class BackendError(WgmeshError):
    """A data-plane backend (netlink, UAPI socket, nftables) failed."""

    code = "backend"


class UnreachableError(WgmeshError):
    """A service did not answer: connection refused, timeout, TLS or protocol failure."""

    code = "unreachable"
    status = 503
