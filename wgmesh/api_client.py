"""The one HTTP client of the coordinator's API: request, JSON answers, error answers, an absent coordinator.

The agent (agent/client.py), the CLI (cli/connection.py) and the lab (lab/api.py) are thin users of it: they
add their paths, their models and, for the CLI, hints in messages. Which exception an error answer becomes is
decided in wgmesh.errors.error_class, nowhere else. How the coordinator's TLS is trusted is wgmesh.trust's:
the users pass the context (a pin, a CA file), else the system's store with SSL_CERT_FILE is used.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self, TypeVar
from urllib.parse import urlsplit

import httpx
import pydantic

from wgmesh import __version__, failover, trust
from wgmesh.errors import IdentityError, RateLimitedError, UnreachableError, ValidationError, from_answer
from wgmesh.logs import kv

JsonValue = pydantic.JsonValue
_M = TypeVar("_M", bound=pydantic.BaseModel)
_ERRNO = re.compile(r"^\[Errno -?\d+\]\s*")
_JSON: pydantic.TypeAdapter[JsonValue] = pydantic.TypeAdapter(JsonValue)
log = logging.getLogger("wgmesh.api_client")

KEEP_IDLE = 30.0
"""Seconds an idle connection to the coordinator is kept for the next request: a TLS handshake saved for
each report, and shorter than the coordinator keeps it, so the close that matters is ours."""
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT"})
"""Methods sent again to the next coordinator after a failure that may have reached the first one; any
other write is sent again only when it surely did nothing there (`UnreachableError.unsent`)."""
UNSENT_CODES = frozenset({"database_unavailable"})
"""Error codes of an answer given before the coordinator acted on the request."""


def transport_reason(exc: Exception) -> str:
    """The first line of a transport failure, without its `[Errno N]` prefix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return _ERRNO.sub("", text)


def answer_error(response: httpx.Response) -> tuple[str, str] | None:
    """The `(code, message)` of a wgmesh error answer; None for an answer in another shape."""
    try:
        body = response.json()["error"]
        return str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        return None


MAX_RETRY_AFTER = 3600.0
"""The longest `Retry-After` honoured: a larger one would park an agent for good (or overflow a wait)."""


def retry_after(response: httpx.Response) -> float | None:
    """The seconds of a `Retry-After: SECONDS` header (429, 503), at most an hour; None without one (or
    with a date)."""
    value = response.headers.get("retry-after", "").strip()
    return min(float(value), MAX_RETRY_AFTER) if value.isascii() and value.isdigit() else None


def check_url(url: str) -> str:
    """A coordinator URL without its trailing slash, or ValidationError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            f"coordinator URL {url!r} must look like http://HOST:PORT or https://HOST", code="bad_url"
        )
    if parts.query or parts.fragment:
        raise ValidationError(f"coordinator URL {url!r} must not have a query or fragment", code="bad_url")
    return url.rstrip("/")


class ApiClient:
    """Calls to the coordinator with an optional bearer token; every failure is a WgmeshError, one line.

    Several URLs name coordinators of one registry: a request that finds one unreachable moves to the
    next (wgmesh/failover.py says which and when), and the client stays there.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        bearer: str | None = None,
        user_agent: str,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
        failover_config: failover.FailoverConfig = failover.DEFAULT,
    ) -> None:
        urls = tuple(u.rstrip("/") for u in ([url] if isinstance(url, str) else url))
        self._choice = failover.Choice(urls, since=time.monotonic())
        self._failover = failover_config
        self._lock = threading.Lock()  # the agent's threads share one client
        for each in urls:
            if isinstance(tls, trust.PinnedContext) and not each.startswith("https://"):
                raise IdentityError(f"coordinator {each} is pinned: use its https:// URL")
        self.timeout = timeout
        self.bearer = bearer
        self._http = httpx.Client(
            base_url=urls[0],
            timeout=timeout,
            # A proxy from the environment must never see mesh control traffic or its tokens.
            trust_env=False,
            headers={"user-agent": f"{user_agent}/{__version__}"},
            transport=transport,
            verify=tls if tls is not None else trust.system(),
            # Kept between reports (every 10 s; httpx's default drops an idle connection after 5 s), and
            # given up before the coordinator's 35 s (coordinator/main.py KEEP_ALIVE) closes it.
            limits=httpx.Limits(keepalive_expiry=KEEP_IDLE),
        )

    @property
    def url(self) -> str:
        """The coordinator URL in use."""
        return self._choice.url

    @property
    def urls(self) -> tuple[str, ...]:
        """Every coordinator URL, the preferred first."""
        return self._choice.urls

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def _pick(self) -> str:
        with self._lock:
            before = self._choice
            self._choice = failover.before_request(before, time.monotonic(), self._failover)
        if self._choice is not before:
            log.info(
                "coordinator switched",
                extra=kv(coordinator=self._choice.url, previous=before.url, reason="retry_first"),
            )
        return self._choice.url

    def _failed(self, url: str, error: UnreachableError) -> None:
        with self._lock:
            if self._choice.url != url:
                return  # another thread has moved on already
            self._choice = failover.after_failure(self._choice, time.monotonic())
            now = self._choice.url
        log.info("coordinator switched", extra=kv(coordinator=now, previous=url, error=error.message))

    def request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> httpx.Response:
        """Send one request; a transport failure is UnreachableError, an error answer its mapped class.

        With several URLs an unreachable coordinator (refused, timeout, 5xx) makes the next one current;
        the request goes there too when it is safe to send twice (`retry`, by default for IDEMPOTENT
        methods) or surely did nothing. A rate limit is one coordinator's answer, not its absence.
        """
        again = method in IDEMPOTENT if retry is None else retry
        # On the same coordinator, only what HTTP itself calls idempotent (a POST marked safe to retry,
        # enrollment, goes to the next coordinator instead, as before).
        resend = method in IDEMPOTENT and retry is not False
        tries = failover.attempts(self._choice)
        for attempt in range(tries):
            url = self._pick()
            try:
                return self._send(url, method, path, json=json, params=params, timeout=timeout, again=resend)
            except RateLimitedError:
                raise
            except UnreachableError as exc:
                if tries == 1:
                    raise
                self._failed(url, exc)
                if attempt == tries - 1 or not (again or exc.unsent):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _send(
        self,
        url: str,
        method: str,
        path: str,
        *,
        json: object,
        params: dict[str, str] | None,
        timeout: float | None,
        again: bool = False,
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.bearer}"} if self.bearer else {}

        def send() -> httpx.Response:
            return self._http.request(
                method,
                url + path,
                json=json,
                params=params,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )

        try:
            try:
                response = send()
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if not again:
                    raise
                # The coordinator closed (or reset) a kept-alive connection as this request went out on
                # it (its idle timer and our request crossed): nothing was answered, and an idempotent
                # request may be sent once more on a new connection, as HTTP clients do.
                response = send()
        except httpx.TimeoutException as exc:
            waited = timeout if timeout is not None else self.timeout
            error = UnreachableError(f"coordinator {url} did not answer within {waited:g} s")
            error.unsent = isinstance(exc, httpx.ConnectTimeout)
            raise error from exc
        except httpx.HTTPError as exc:
            refused = trust.refusal(url, exc)
            if refused is not None:
                refused.unsent = True  # the TLS handshake failed: nothing was sent
                raise refused from exc
            error = UnreachableError(f"cannot reach the coordinator at {url}: {transport_reason(exc)}")
            error.unsent = isinstance(exc, httpx.ConnectError)
            raise error from exc
        if response.status_code >= 400:
            found = answer_error(response)
            code, message = found if found is not None else (None, "")
            error_answer = from_answer(
                response.status_code, code, self.describe(method, path, response, code, message)
            )
            if isinstance(error_answer, UnreachableError):
                error_answer.retry_after = retry_after(response)
                error_answer.unsent = code in UNSENT_CODES
            raise error_answer
        return response

    def describe(
        self, method: str, path: str, response: httpx.Response, code: str | None, message: str
    ) -> str:
        """The message of an error answer (`code` None when it is not a wgmesh error); users add hints."""
        status = response.status_code
        if code is None:
            return (
                f"{self.url}{path} answered HTTP {status} without a wgmesh error: is it a wgmesh coordinator?"
            )
        if status >= 500:
            return f"coordinator {self.url} failed: {message}"
        return message

    def json(self, method: str, path: str, *, json: object = None, timeout: float | None = None) -> JsonValue:
        """A request whose answer is any JSON document (None for an empty answer)."""
        response = self.request(method, path, json=json, timeout=timeout)
        if not response.content:
            return None
        try:
            return _JSON.validate_json(response.content)
        except pydantic.ValidationError as exc:
            raise UnreachableError(f"{self.url}{path} answered with invalid JSON", code="bad_answer") from exc

    def call(
        self,
        method: str,
        path: str,
        model: type[_M],
        *,
        json: object = None,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> _M:
        """A request whose answer is a `model` document."""
        return self.parse(self.request(method, path, json=json, timeout=timeout, retry=retry), path, model)

    def parse(self, response: httpx.Response, path: str, model: type[_M]) -> _M:
        """The answer as a `model`; another shape means a coordinator of another version (UnreachableError)."""
        try:
            return model.model_validate_json(response.content)
        except pydantic.ValidationError as exc:
            raise UnreachableError(
                f"unexpected answer from {self.url}{path}: {exc.error_count()} field(s) do not match "
                f"{model.__name__}; is the coordinator the same version as this program ({__version__})?",
                code="bad_answer",
            ) from exc
