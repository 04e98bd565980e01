"""Declared API operations: one table drives both the Starlette routes and the OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread
import pydantic
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from wgmesh.errors import MalformedRequestError, PayloadTooLargeError, RequestTimeoutError, ValidationError
from wgmesh.models import FROM_CLIENT, ErrorResponse
from wgmesh.values import NodeId

Auth = Literal["none", "admin-read", "admin", "node", "relay"]
"""Who may call an operation: anyone, any admin token (read-only ones too), a full admin token, a node,
a relay the coordinator announces (its signed token, wgmesh/relay/revocation.py)."""

T = TypeVar("T")


@dataclass(frozen=True)
class Query:
    """A query parameter, for the OpenAPI document."""

    name: str
    type: Literal["integer", "number", "string"]
    description: str


class Lane:
    """Worker threads of its own for the operations that share it (`threads`: their calls wait for none of
    the shared pool's, nor the shared pool for theirs) and, with `at_once`, at most that many of their calls
    at a time, the others waiting with their body unread. Its asyncio and anyio objects are made for
    whichever event loop serves the app (they belong to the loop they are first used on; an app may be
    served by one loop after another, as in tests)."""

    def __init__(self, threads: int, at_once: int | None = None) -> None:
        self.n_threads = threads
        self.at_once = at_once
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[asyncio.Semaphore | None, anyio.CapacityLimiter]
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # loops of other threads (tests) may make theirs at the same time

    def _current(self) -> tuple[asyncio.Semaphore | None, anyio.CapacityLimiter]:
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._by_loop.get(loop)
            if found is None:
                turns = asyncio.Semaphore(self.at_once) if self.at_once is not None else None
                found = self._by_loop[loop] = (turns, anyio.CapacityLimiter(self.n_threads))
        return found

    def turn(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Held for a whole call (a no-op without `at_once`)."""
        turns = self._current()[0]
        return turns if turns is not None else contextlib.nullcontext()

    def threads(self) -> anyio.CapacityLimiter:
        """The lane's worker threads."""
        return self._current()[1]


async def in_thread(lane: Lane | None, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on a worker thread: the lane's, else the shared pool (run_in_threadpool)."""
    if lane is None:
        return await run_in_threadpool(fn, *args)
    return await anyio.to_thread.run_sync(fn, *args, limiter=lane.threads())


@dataclass(frozen=True)
class Call:
    """What a handler receives: the request, the validated body and, for node calls, the node id."""

    request: Request
    body: Any
    node_id: NodeId | None = None
    lane: Lane | None = None
    """The operation's lane (`Operation.lane`), if it has one."""

    def param(self, name: str) -> str:
        """A path parameter."""
        return str(self.request.path_params[name])

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a worker thread of the operation's lane, else of the shared pool."""
        return await in_thread(self.lane, fn, *args)


Handler = Callable[[Call], Awaitable[BaseModel | Response]]


MAX_BODY = 1024 * 1024
"""Request bodies over this are refused (413): every body of the API is a few KB but a status report."""
REPORT_MAX_BODY = 4 * 1024 * 1024
"""A node's status report: one entry of about 270 bytes per peer, up to StatusReport's 10,000 peers."""
REPORTS = Lane(threads=8, at_once=8)
"""Status reports: eight read, parsed and written at a time (each is a few MB of objects at 1,000 peers,
and SQLite writes them one at a time anyway; eight keep PostgreSQL's writers busy), on threads of their
own, so that the long-polls a report's change wakes do not hold the next reports up."""
NETMAPS = Lane(threads=8)
"""The netmap long-polls' answers (both calls): a change wakes every agent's at once, a thousand whole
netmaps after a restart; eight threads build them, a few MB each, with the reports' eight beside them."""
BODY_DEADLINE = 30.0
"""Seconds a body may take to arrive while it holds a lane's turn (4 MiB at ~1 Mbit/s)."""
PARSE_APART_FROM = 64 * 1024
"""Bodies of at least this many bytes are parsed on a worker thread: a report of 1,000 peers (~210 KB)
takes milliseconds of the event loop that serves every other request."""


@dataclass(frozen=True)
class Operation:
    """One API operation."""

    method: str
    path: str
    handler: Handler
    summary: str
    auth: Auth
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    query: tuple[Query, ...] = ()
    extra_responses: dict[int, str] = field(default_factory=dict)
    audit: str | None = None
    """The audit-log action a successful call records (every admin change has one)."""
    max_body: int = MAX_BODY
    """The largest body taken (413 above it, declared or streamed), read only once the caller is known."""
    lane: Lane | None = None
    """Worker threads of its own (and a bound on calls at a time) for the operation, or the shared pool."""


Authenticator = Callable[[Request, Auth], Awaitable[NodeId | None]]
Auditor = Callable[[Operation, Call, BaseModel | Response], Awaitable[None]]


def format_validation_error(exc: pydantic.ValidationError) -> str:
    """pydantic's errors as one readable line: `field: what is wrong; …`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def _refuse_constant(name: str) -> None:
    # Python's json reads NaN and Infinity, which JSON (RFC 8259) and PostgreSQL's json type do not.
    raise ValueError(f"{name} is not a JSON value")


async def read_body(
    request: Request, model: type[BaseModel], limit: int = MAX_BODY, lane: Lane | None = None
) -> BaseModel:
    """Parse and validate a JSON body of at most `limit` bytes into `model`, with errors a person can act
    on; a body declared larger is refused before a byte of it is read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is over {limit} bytes")
    chunks: list[bytes] = []
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLargeError(f"request body is over {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if len(raw) >= PARSE_APART_FROM:
        return await in_thread(lane, parse_body, raw, model)
    return parse_body(raw, model)


def parse_body(raw: bytes, model: type[BaseModel]) -> BaseModel:
    """A JSON body into `model` (read_body)."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant) if raw else None
    except ValueError as exc:  # bad syntax or UTF-8, NaN/Infinity, integers over 4300 digits
        raise MalformedRequestError(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise MalformedRequestError("request body is not valid JSON: nested too deeply") from exc
    if not isinstance(data, dict):
        raise MalformedRequestError("request body must be a JSON object")
    try:
        return model.model_validate(data, context=FROM_CLIENT)
    except pydantic.ValidationError as exc:
        raise ValidationError(format_validation_error(exc)) from exc


def json_response(model: BaseModel, status: int = 200) -> Response:
    """Serialise a model as the JSON answer."""
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


GZIP_FROM = 2048
"""Answers of at least this many bytes are compressed for a client that accepts gzip: a whole netmap at
1,000 peers is about 400 KB of JSON, and compresses about fivefold; small answers gain nothing."""


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (`gzip;q=0` refuses it)."""
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


def compressed_json(request: Request, model: BaseModel) -> Response:
    """`model` as the JSON answer, gzip-compressed when large and the client accepts it."""
    body = model.model_dump_json().encode()
    if len(body) < GZIP_FROM or not accepts_gzip(request.headers.get("accept-encoding", "")):
        return Response(body, media_type="application/json")
    # Level 1: most of the gain (JSON repeats its keys) at a fraction of the CPU of the default 9.
    response = Response(gzip.compress(body, compresslevel=1, mtime=0), media_type="application/json")
    response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    return response


async def _read_in_turn(request: Request, op: Operation, lane: Lane | None) -> BaseModel:
    """The body, within BODY_DEADLINE when it holds one of a bounded lane's turns: a client sending it
    slowly must not keep the others' reports waiting (408)."""
    assert op.body is not None
    if lane is None or lane.at_once is None:
        return await read_body(request, op.body, op.max_body, lane)
    try:
        async with asyncio.timeout(BODY_DEADLINE):
            return await read_body(request, op.body, op.max_body, lane)
    except TimeoutError:
        raise RequestTimeoutError(f"request body did not arrive within {BODY_DEADLINE:g} s") from None


def to_route(op: Operation, authenticate: Authenticator, audit: Auditor | None = None) -> Route:
    """A Starlette route that authenticates, parses the body, runs the handler and, for an operation
    with an audit action, records the call once it has succeeded."""

    lane = op.lane

    async def endpoint(request: Request) -> Response:
        node_id = await authenticate(request, op.auth)
        async with lane.turn() if lane is not None else contextlib.nullcontext():
            body = await _read_in_turn(request, op, lane) if op.body is not None else None
            call = Call(request, body, node_id, lane)
            result = await op.handler(call)
        if op.audit is not None and audit is not None:
            await audit(op, call, result)
        if isinstance(result, Response):
            return result
        return json_response(result, op.status)

    return Route(op.path, endpoint, methods=[op.method], name=f"{op.method} {op.path}")


def openapi_document(ops: list[Operation], *, title: str, version: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document generated from the operations' pydantic models."""
    models: set[type[BaseModel]] = {ErrorResponse}
    for op in ops:
        models.update(m for m in (op.body, op.response) if m is not None)
    keyed = sorted(models, key=lambda m: m.__name__)
    _, defs = models_json_schema(
        [(m, "validation") for m in keyed], ref_template="#/components/schemas/{model}"
    )

    def ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error = {"description": "error", "content": {"application/json": {"schema": ref(ErrorResponse)}}}
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        entry: dict[str, Any] = {"summary": op.summary, "operationId": op.handler.__name__}
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(op.path)
        ]
        params += [
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "schema": {"type": q.type},
                "description": q.description,
            }
            for q in op.query
        ]
        if params:
            entry["parameters"] = params
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(op.body)}},
            }
        ok: dict[str, Any] = {"description": "success"}
        if op.response is not None:
            ok["content"] = {"application/json": {"schema": ref(op.response)}}
        responses: dict[str, Any] = {str(op.status): ok, "4XX": error}
        for code, text in op.extra_responses.items():
            responses[str(code)] = {"description": text}
        entry["responses"] = responses
        if op.auth != "none":
            entry["security"] = [{op.auth: []}] if op.auth in ("node", "relay") else [{"admin": []}]
        # which credential may call it: admin-read takes read-only admin tokens too, admin does not
        entry["x-wgmesh-auth"] = op.auth
        if op.audit is not None:
            entry["x-wgmesh-audit"] = op.audit
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer", "description": "admin token"},
                "node": {"type": "http", "scheme": "bearer", "description": "node credential"},
                "relay": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "relay token signed with its pinned key",
                },
            },
        },
    }


def _path_params(path: str) -> list[str]:
    return [seg[1:-1].split(":")[0] for seg in path.split("/") if seg.startswith("{") and seg.endswith("}")]


def error_response(code: str, message: str, status: int) -> JSONResponse:
    """The one shape of every error answer."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
