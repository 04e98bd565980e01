"""The agent's HTTP client for the coordinator's node API."""

from __future__ import annotations

from typing import TypeVar

import httpx
import pydantic

from wgmesh import __version__
from wgmesh.errors import AuthError, ConflictError, NotFoundError, ValidationError, WgmeshError
from wgmesh.models import (
    EnrollRequest,
    EnrollResponse,
    NetMap,
    RelayGrant,
    Route,
    RouteList,
    StatusReport,
    SubnetsUpdate,
)

_M = TypeVar("_M", bound=pydantic.BaseModel)


class CoordinatorUnreachable(WgmeshError):
    """The coordinator did not answer (connection refused, timeout, 5xx)."""

    code = "unreachable"


_BY_STATUS: dict[int, type[WgmeshError]] = {
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    400: ValidationError,
}


class CoordinatorClient:
    """Node calls: enroll, follow the netmap, report status."""

    def __init__(self, base_url: str, credential: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            # A proxy from the environment must never carry mesh control traffic elsewhere.
            trust_env=False,
            headers={"user-agent": f"wgmesh-agent/{__version__}"},
        )
        self.credential = credential

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.credential}"} if self.credential else {}
        try:
            response = self._http.request(
                method,
                path,
                json=json,
                params=params,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise CoordinatorUnreachable(f"{self.base_url}: {exc.__class__.__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise CoordinatorUnreachable(f"{self.base_url}: HTTP {response.status_code}")
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                code, message = str(err["code"]), str(err["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", f"HTTP {response.status_code}"
            raise _BY_STATUS.get(response.status_code, WgmeshError)(message, code=code)
        return response

    def enroll(self, req: EnrollRequest) -> EnrollResponse:
        """Redeem the enrollment token."""
        response = self._request(
            "POST", "/api/v1/enroll", json=req.model_dump(mode="json", exclude_none=True)
        )
        return _parse(EnrollResponse, response)

    def netmap(self, since: int, wait: float) -> NetMap | None:
        """The netmap if newer than `since`, waiting up to `wait` s for a change; None if none came."""
        response = self._request(
            "GET", "/api/v1/netmap", params={"since": str(since), "wait": str(wait)}, timeout=wait + 10
        )
        if response.status_code == 304:
            return None
        return _parse(NetMap, response)

    def report(self, status: StatusReport) -> None:
        """Post a status report."""
        self._request("POST", "/api/v1/status", json=status.model_dump(mode="json", exclude_none=True))

    def relay_grant(self) -> RelayGrant:
        """The relays and a fresh relay ticket for this node."""
        return _parse(RelayGrant, self._request("GET", "/api/v1/node/relay"))

    def advertise(self, subnets: list[str]) -> list[Route]:
        """Replace this node's advertised subnets; returns the coordinator's verdict on each."""
        response = self._request(
            "PUT", "/api/v1/node/subnets", json=SubnetsUpdate(subnets=subnets).model_dump()
        )
        return _parse(RouteList, response).routes


def _parse(model: type[_M], response: httpx.Response) -> _M:
    try:
        return model.model_validate_json(response.content)
    except pydantic.ValidationError as exc:
        raise CoordinatorUnreachable(
            f"coordinator sent an unexpected answer: {exc.error_count()} errors"
        ) from exc
