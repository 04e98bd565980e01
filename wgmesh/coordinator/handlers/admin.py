"""The admin API: network settings, tokens, nodes, statuses, static-peer configs, routes, pairs, topology."""

from __future__ import annotations

import logging
from functools import partial
from typing import cast

from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from wgmesh.coordinator.handlers.auth import actor_of, request_scheme
from wgmesh.coordinator.handlers.context import context
from wgmesh.coordinator.metrics import scrape_targets
from wgmesh.coordinator.operations import Call, error_response, json_response
from wgmesh.coordinator.registry import row_id
from wgmesh.errors import NotFoundError, ValidationError
from wgmesh.join_token import with_identity
from wgmesh.logs import kv
from wgmesh.models import (
    AdminTokenCreate,
    AdminTokenCreated,
    AdminTokenInfo,
    AdminTokenList,
    LinkState,
    Model,
    Network,
    Node,
    NodeList,
    PairList,
    Rate,
    Route,
    RouteAlias,
    RouteDecision,
    RouteList,
    StatusList,
    TokenCreated,
    TokenInfo,
    TokenList,
    Topology,
    TopologyLinkPage,
    TopologyNode,
    TopologyNodePage,
    TopologyProblem,
    TopologySummary,
)
from wgmesh.netmap import wg_quick_config
from wgmesh.topology_summary import LINK_STATES, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, PROBLEMS
from wgmesh.values import Decision, P2PPolicy

log = logging.getLogger("wgmesh.coordinator")


class PairSet(Model):
    """A pair's overrides; a field given as null clears it, an omitted field stays as it is."""

    p2p: P2PPolicy | None = Field(None, description="auto, off, or null to clear the override")
    rate: Rate | None = Field(None, description="limit each way, e.g. 20mbit, or null to remove it")


async def get_network(call: Call) -> Network:
    registry = context(call.request).registry
    return await run_in_threadpool(registry.network)


async def patch_network(call: Call) -> Network:
    registry = context(call.request).registry
    return await run_in_threadpool(registry.patch_network, call.body)


async def create_token(call: Call) -> TokenCreated:
    ctx = context(call.request)
    registry, settings = ctx.registry, ctx.settings
    created = await run_in_threadpool(registry.create_token, call.body)
    log.info("token created", extra=kv(token_id=created.id, reusable=created.reusable))
    if settings.pin is None:
        return created
    # The token names whom to trust and where: the --public-url(s), else the URL this request came to.
    request = call.request
    scheme = request_scheme(request, settings.trusted_proxies, settings.forwarded_proto)
    urls = list(settings.public_urls) or [f"{scheme}://{request.url.netloc}"]
    return created.model_copy(update={"token": with_identity(created.token, settings.pin, urls)})


async def list_tokens(call: Call) -> TokenList:
    registry = context(call.request).registry
    return TokenList(tokens=await run_in_threadpool(registry.list_tokens))


async def revoke_token(call: Call) -> TokenInfo:
    registry = context(call.request).registry
    ref = call.param("token_id")
    if not (ref.isascii() and ref.isdigit()):
        raise ValidationError(f"token id {ref!r} is not a number", code="invalid_token_id")
    token_id = row_id(ref)
    if token_id is None:
        raise NotFoundError(f"token {ref} does not exist", code="unknown_token")
    return await run_in_threadpool(registry.revoke_token, token_id)


async def create_admin_token(call: Call) -> AdminTokenCreated:
    registry = context(call.request).registry
    body: AdminTokenCreate = call.body
    info, secret = await run_in_threadpool(
        lambda: registry.admin_tokens.create(body.name, read_only=body.read_only)
    )
    log.info("admin token created", extra=kv(name=info.name, read_only=info.read_only))
    return AdminTokenCreated(**info.model_dump(), token=secret)


async def list_admin_tokens(call: Call) -> AdminTokenList:
    registry = context(call.request).registry
    return AdminTokenList(admin_tokens=list(await run_in_threadpool(registry.admin_tokens.list)))


async def revoke_admin_token(call: Call) -> AdminTokenInfo:
    ctx = context(call.request)
    info, token_id = await run_in_threadpool(ctx.registry.admin_tokens.revoke, call.param("name"))
    # at once, on every coordinator: the sessions are rows of the registry's database
    ended = await run_in_threadpool(ctx.sessions.drop_token, token_id)
    if ended:
        # wakes the event streams, so that those of the ended sessions tell their pages at once (on a
        # shared database drop_token's NOTIFY wakes every coordinator's too)
        ctx.notifier.notify_threadsafe(0)
    log.info("admin token revoked", extra=kv(name=info.name, sessions_ended=ended))
    return info


async def list_nodes(call: Call) -> NodeList:
    registry = context(call.request).registry
    return NodeList(nodes=await run_in_threadpool(registry.list_nodes))


def _actor(call: Call) -> str:
    """Who approves what an admin call lists or decides: the audit log's name for the caller."""
    actor = actor_of(call.request)
    return actor.label if actor is not None else "admin"


async def create_node(call: Call) -> Node:
    registry = context(call.request).registry
    node, _ = await run_in_threadpool(registry.create_static_node, call.body, _actor(call))
    log.info("static node created", extra=kv(node=node.name, node_id=node.id))
    return node


async def get_node(call: Call) -> Node:
    registry = context(call.request).registry
    return await run_in_threadpool(registry.get_node, call.param("node"))


async def patch_node(call: Call) -> Node:
    registry = context(call.request).registry
    return await run_in_threadpool(registry.patch_node, call.param("node"), call.body, _actor(call))


async def delete_node(call: Call) -> Node:
    registry = context(call.request).registry
    node = await run_in_threadpool(registry.delete_node, call.param("node"))
    log.info("node deleted", extra=kv(node=node.name, node_id=node.id))
    return node


async def rotate_node_key(call: Call) -> Node:
    registry = context(call.request).registry
    node = await run_in_threadpool(registry.request_rotation, call.param("node"))
    log.info(
        "key rotation requested",
        extra=kv(node=node.name, node_id=node.id, done=node.rotate_requested_at is None),
    )
    return node


async def get_node_status(call: Call) -> Response:
    registry = context(call.request).registry
    found = await run_in_threadpool(registry.node_status, call.param("node"))
    if found is None:
        return error_response("no_status", f"node {call.param('node')!r} has not reported yet", 404)
    return json_response(found)


async def list_statuses(call: Call) -> StatusList:
    registry = context(call.request).registry
    found = await run_in_threadpool(registry.statuses)
    return StatusList(statuses=sorted(found.values(), key=lambda s: s.node))


async def get_node_config(call: Call) -> Response:
    registry = context(call.request).registry
    node, private_key = await run_in_threadpool(registry.node_private_key, call.param("node"))
    netmap = await run_in_threadpool(registry.netmap, node.id)
    log.info("static peer config exported", extra=kv(node=node.name, node_id=node.id))
    response = json_response(wg_quick_config(netmap, private_key))
    response.headers["cache-control"] = "no-store"  # it carries a private key
    return response


async def list_routes(call: Call) -> RouteList:
    registry = context(call.request).registry
    return RouteList(routes=await run_in_threadpool(registry.routes))


async def approve_route(call: Call) -> Route:
    return await _decide_route(call, "approved")


async def reject_route(call: Call) -> Route:
    return await _decide_route(call, "rejected")


async def _decide_route(call: Call, verdict: Decision) -> Route:
    registry = context(call.request).registry
    body: RouteDecision = call.body
    node, actor = call.param("node"), _actor(call)
    route = await run_in_threadpool(registry.decide_route, node, body.prefix, verdict, actor, body.reason)
    log.info("route decided", extra=kv(node=node, prefix=body.prefix, verdict=verdict, actor=actor))
    return route


async def alias_route(call: Call) -> Route:
    registry = context(call.request).registry
    body: RouteAlias = call.body
    node = call.param("node")
    route = await run_in_threadpool(registry.set_route_alias, node, body.prefix, body.alias)
    log.info("route alias set", extra=kv(node=node, prefix=body.prefix, alias=body.alias, actor=_actor(call)))
    return route


async def list_pairs(call: Call) -> PairList:
    registry = context(call.request).registry
    return PairList(pairs=await run_in_threadpool(registry.list_pairs))


async def set_pair(call: Call) -> Response:
    registry = context(call.request).registry
    body: PairSet = call.body
    if not body.model_fields_set:
        raise ValidationError("give p2p and/or rate (null clears)", code="empty_pair_update")
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    result = await run_in_threadpool(registry.set_pair, call.param("a"), call.param("b"), changes)
    if result is None:
        return Response(status_code=204)
    return json_response(result)


async def get_topology(call: Call) -> Topology:
    registry = context(call.request).registry
    return await run_in_threadpool(registry.topology)


async def get_topology_summary(call: Call) -> TopologySummary:
    registry = context(call.request).registry
    return await run_in_threadpool(registry.topology_summary)


def _query(call: Call, name: str, choices: tuple[str, ...] | None = None) -> str | None:
    """A query parameter (None when absent or empty), one of `choices` when given."""
    value = call.request.query_params.get(name) or None
    if value is not None and choices is not None and value not in choices:
        raise ValidationError(
            f"{name} must be one of {', '.join(choices)}, not {value!r}", code="invalid_query"
        )
    return value


def _page(call: Call) -> tuple[int, int]:
    """`offset` and `limit` of a page: whole numbers, 0 <= offset, 1 <= limit <= PAGE_LIMIT_MAX."""
    bounds = {"offset": (0, 0, None), "limit": (PAGE_LIMIT_DEFAULT, 1, PAGE_LIMIT_MAX)}
    found = []
    for name, (default, low, high) in bounds.items():
        text = _query(call, name)
        try:
            value = default if text is None else int(text)
        except ValueError:
            raise ValidationError(
                f"{name} must be a whole number, not {text!r}", code="invalid_query"
            ) from None
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise ValidationError(f"{name} must be {span}, not {value}", code="invalid_query")
        found.append(value)
    return found[0], found[1]


async def get_topology_nodes(call: Call) -> TopologyNodePage:
    registry = context(call.request).registry
    offset, limit = _page(call)
    problem = cast(TopologyProblem | None, _query(call, "problem", PROBLEMS))
    return await run_in_threadpool(
        partial(
            registry.topology_nodes,
            tag=_query(call, "tag"),
            site=_query(call, "site"),
            problem=problem,
            name=_query(call, "name"),
            offset=offset,
            limit=limit,
        )
    )


async def get_topology_node(call: Call) -> TopologyNode:
    registry = context(call.request).registry
    return await run_in_threadpool(registry.topology_node, call.param("node"))


async def get_topology_links(call: Call) -> TopologyLinkPage:
    registry = context(call.request).registry
    offset, limit = _page(call)
    state = cast(LinkState | None, _query(call, "state", LINK_STATES))
    return await run_in_threadpool(
        partial(registry.topology_links, call.param("node"), state=state, offset=offset, limit=limit)
    )


async def prometheus_targets(call: Call) -> Response:
    registry = context(call.request).registry
    return JSONResponse(await run_in_threadpool(scrape_targets, registry))
