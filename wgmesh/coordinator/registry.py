"""The coordinator's use cases over the store: enrollment, nodes, routes, tokens, status, netmaps.

Everything here is synchronous (the API runs it in a worker thread) and every write happens in one
transaction, so a refused request leaves the database exactly as it was.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from wgmesh import ipam, keys, netmap_delta, route_approval, versions
from wgmesh.coordinator import admin_tokens, identity, schema
from wgmesh.coordinator.audit import AuditLog, write_entry
from wgmesh.coordinator.credentials import LiveCredentials, make_credential, parse_credential
from wgmesh.coordinator.heartbeats import LastSeenBatch
from wgmesh.coordinator.report_digests import ReportDigests
from wgmesh.coordinator.store import IN_CHUNK, UNAVAILABLE, VERSION_TRUST, Store, Writer, as_utc, utcnow
from wgmesh.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from wgmesh.join_token import JoinToken
from wgmesh.logs import kv
from wgmesh.models import (
    DirectTcp,
    EnrollRequest,
    LinkState,
    NetMap,
    NetMapChange,
    Network,
    NetworkPatch,
    Node,
    NodeCreate,
    NodePatch,
    NodeStatus,
    PairPolicy,
    PeerStatus,
    RelayGrant,
    RelayInfo,
    RevokedTicket,
    Route,
    StatusReport,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    Topology,
    TopologyLinkPage,
    TopologyNode,
    TopologyNodePage,
    TopologyNodeRow,
    TopologyProblem,
    TopologySummary,
)
from wgmesh.netmap import RegistrySnapshot, build_netmap
from wgmesh.netmap_delta import SnapshotDiff
from wgmesh.relay import identity as relay_identity
from wgmesh.relay import tickets
from wgmesh.topology import build_topology, pair_key, report_entries, topology_node
from wgmesh.topology_summary import (
    LinkTally,
    ReportDigest,
    filter_rows,
    link_states_of,
    node_links,
    node_rows,
    summarize,
    tally_links,
)
from wgmesh.values import Decision, Endpoint, NodeId, P2PPolicy, Prefix

log = logging.getLogger("wgmesh.coordinator")

ONLINE_WINDOW = timedelta(seconds=45)
LINK_COUNT_TTL = timedelta(seconds=5)
"""How long the topology summary's link counts stand while the same nodes exist: links change state by
minutes (a handshake is fresh for HANDSHAKE_FRESH), reports come every 10 s; everything else in the
summary (nodes, routes, tags) is as of the request."""
ENROLL_RETRY_WINDOW = timedelta(minutes=10)
"""How long after an enrollment the same token, name and key get that node again (an answer lost on the
way, retried on another coordinator), as long as the node has not reported yet."""
MAX_KNOWN_CREDENTIALS = 100_000
"""Node credentials remembered for a database outage; more than any registry has nodes."""
HELD_VERSIONS = 64
"""Snapshots kept for netmap changes: an agent further behind (or on a version this coordinator never
built) gets its netmap whole. 64 covers a burst of enrollments between two polls; each costs about the
registry's size (some MB at 5,000 nodes)."""
CHEAP_PEERS = 64
"""A netmap change of at most this many peers is answered on the event loop (handlers/node.py)."""
MAX_ROW_ID = 2**63 - 1  # the largest id a BIGINT (or SQLite INTEGER) column holds


def row_id(text: str) -> int | None:
    """`text` as a row id that can exist (ASCII digits, in range), or None."""
    if text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_ROW_ID:
        return int(text)
    return None


def drop_stale_tombstones(conn: Connection, now: float) -> int:
    """Delete the relay-ticket tombstones whose last ticket has expired by `now`; how many there were."""
    rev = schema.relay_revocations
    return int(conn.execute(delete(rev).where(rev.c.expires_at <= now)).rowcount)


def _revoke_tickets(conn: Connection, node_id: int, now: float) -> None:
    """Revoke every relay ticket `node_id` holds, until the last one has expired; drop stale tombstones."""
    rev = schema.relay_revocations
    # A ticket is signed at whole seconds (floored): one issued in this very second is revoked too.
    issued_before = math.ceil(now)
    conn.execute(delete(rev).where(rev.c.node_id == node_id))
    drop_stale_tombstones(conn, now)
    conn.execute(
        insert(rev).values(
            node_id=node_id,
            issued_before=issued_before,
            # Its last ticket expires a lifetime after it was issued; the relay's clock may be behind.
            expires_at=issued_before + math.ceil(RELAY_TICKET_TTL + tickets.DEFAULT_LEEWAY),
        )
    )


def _renew_psks(conn: Connection, node_id: int) -> None:
    """A new preshared key for every pair `node_id` is in: what an instance that is gone (a rotated key,
    a replaced node) held on its disk no longer matches anything."""
    p = schema.pairs
    others = [i for i in conn.execute(select(schema.nodes.c.id)).scalars() if i != node_id]
    existing = {
        (r.node_a, r.node_b)
        for r in conn.execute(
            select(p.c.node_a, p.c.node_b).where(or_(p.c.node_a == node_id, p.c.node_b == node_id))
        )
    }
    conn.execute(
        update(p)
        .where(or_(p.c.node_a == node_id, p.c.node_b == node_id))
        .values(psk_generation=p.c.psk_generation + 1)
    )
    missing = [pair_key(node_id, other) for other in others]
    rows = [{"node_a": a, "node_b": b, "psk_generation": 1} for a, b in missing if (a, b) not in existing]
    if rows:
        conn.execute(insert(p), rows)


def _check_key_free(conn: Connection, public_key: str, holder: int | None = None) -> None:
    """ConflictError unless no node but `holder` uses `public_key` (one key, one node)."""
    n = schema.nodes.c
    query = select(n.id).where(n.public_key == public_key)
    if holder is not None:
        query = query.where(n.id != holder)
    if conn.execute(query).first() is not None:
        raise ConflictError(
            f"public key {keys.fingerprint(public_key)}… is already used by another node",
            code="duplicate_key",
        )


def _node_status(row: RowMapping) -> NodeStatus:
    """A `status` row joined with its node's name."""
    return NodeStatus(
        node=row["name"],
        reported_at=as_utc(row["reported_at"]),
        report=StatusReport.model_validate(row["report"]),
    )


def _network(conn: Connection) -> Network:
    row = conn.execute(select(schema.networks)).mappings().one()
    return Network(
        name=row["name"],
        overlay_cidr=row["overlay_cidr"],
        p2p=row["p2p"],
        listen_port=row["listen_port"],
        mtu=row["mtu"],
        auto_approve=row["auto_approve"] or [],
        alias_pool=row["alias_pool"],
    )


def _node(row: Mapping[Any, Any], subnets: list[str], now: datetime) -> Node:
    last_seen = as_utc(row["last_seen"])
    return Node(
        id=row["id"],
        name=row["name"],
        public_key=row["public_key"],
        overlay_ip=row["overlay_ip"],
        subnets=subnets,
        p2p=row["p2p"],
        tags=list(row["tags"]),
        listen_port=row["listen_port"],
        endpoints=list(row["endpoints"]),
        eth0_ip=row["eth0_ip"],
        public_ip=row["public_ip"],
        last_seen=last_seen,
        online=last_seen is not None and now - last_seen < ONLINE_WINDOW,
        static=row["static"],
        rate=row["rate"],
        mtu=row["mtu"],
        max_mtu=row["max_mtu"],
        created_at=as_utc(row["created_at"]),
        rotate_requested_at=as_utc(row["rotate_requested_at"]),
        site=row["site"],
        tcp=DirectTcp(port=row["tcp_port"], pin=row["tcp_pin"]) if row["tcp_port"] is not None else None,
    )


def _token_info(row: RowMapping) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        reusable=row["reusable"],
        expires_at=as_utc(row["expires_at"]),
        revoked=row["revoked_at"] is not None,
        uses=row["uses"],
        tags=list(row["tags"]),
        p2p=row["p2p"],
        description=row["description"],
        created_at=as_utc(row["created_at"]),
        allow_subnets=row["allow_subnets"] or [],
        replaces=row["replaces"],
    )


def _load_nodes(conn: Connection) -> list[Node]:
    now = utcnow()
    subnets: dict[int, list[str]] = {}
    for r in conn.execute(
        select(schema.routes.c.node_id, schema.routes.c.prefix).order_by(schema.routes.c.id)
    ):
        subnets.setdefault(r.node_id, []).append(r.prefix)
    rows = conn.execute(select(schema.nodes).order_by(schema.nodes.c.name)).mappings()
    return [_node(row, subnets.get(row["id"], []), now) for row in rows]


NodeRows = dict[int, tuple[tuple[Any, ...], Node]]
"""Each node's row as last loaded for a snapshot (last_seen left out), with the Node made of it."""


def _snapshot_nodes(conn: Connection, prior: NodeRows) -> tuple[list[Node], NodeRows]:
    """The nodes as a snapshot holds them, and their rows for the next snapshot.

    A node whose row did not change keeps the prior snapshot's Node (the same object, so its peer
    template is reused too): parsing 1,000 rows of addresses again on every change was most of a
    version's cost. `last_seen` is not part of a version (every status report moves it without one):
    a snapshot's nodes have none and are not `online`; who shows them reads them fresh (`list_nodes`).
    """
    subnets: dict[int, list[str]] = {}
    for r in conn.execute(
        select(schema.routes.c.node_id, schema.routes.c.prefix).order_by(schema.routes.c.id)
    ):
        subnets.setdefault(r.node_id, []).append(r.prefix)
    columns = [c for c in schema.nodes.c if c.name != "last_seen"]
    nodes: list[Node] = []
    rows: NodeRows = {}
    for row in conn.execute(select(*columns).order_by(schema.nodes.c.name)).mappings():
        key = (*row.values(), *subnets.get(row["id"], []))
        held = prior.get(row["id"])
        node = (
            held[1]
            if held is not None and held[0] == key
            else _node({**row, "last_seen": None}, subnets.get(row["id"], []), utcnow())
        )
        nodes.append(node)
        rows[row["id"]] = (key, node)
    return nodes, rows


def _claim(row: tuple[Any, ...]) -> route_approval.Claim:
    """One route row (`_classify`'s columns, in order) as the claim the rules judge."""
    prefix, _node_id, decision, decided_by, decision_reason, name, site, allow_subnets, alias, alias_by = row
    admin = (
        route_approval.AdminDecision(decision, decided_by or "", decision_reason or "")
        if decision in ("approved", "rejected")
        else None
    )
    allows = tuple(ipam.parse_cidr(p) for p in allow_subnets or ())
    return route_approval.Claim(
        ipam.parse_cidr(prefix),
        name,
        admin,
        allows,
        site,
        ipam.parse_cidr(alias) if alias is not None else None,
        alias_by,
    )


@dataclass(frozen=True, slots=True)
class HeldRoutes:
    """The routes as judged from `rows` (the route rows with their gateways' names, sites and rules)
    under the network's `rules` (overlay, auto-approval)."""

    rows: tuple[tuple[Any, ...], ...]
    rules: tuple[Any, ...]
    routes: tuple[Route, ...]


ROUTE_FIELDS = (
    "prefix",
    "gateway",
    "gateway_id",
    "state",
    "reason",
    "conflicting_with",
    "decided_by",
    "alias",
    "alias_by",
)
"""Everything a Route holds: two with equal values here are the same route (_classify keeps the held one)."""


def _route_rows(conn: Connection) -> tuple[tuple[Any, ...], ...]:
    """Every route row with its gateway's name, site and token rules, oldest first (`_claim` reads them)."""
    r, n = schema.routes.c, schema.nodes.c
    return tuple(
        tuple(row)
        for row in conn.execute(
            select(
                r.prefix,
                r.node_id,
                r.decision,
                r.decided_by,
                r.decision_reason,
                n.name,
                n.site,
                n.allow_subnets,
                r.alias,
                r.alias_by,
            )
            .join(schema.nodes, n.id == r.node_id)
            .order_by(r.id)
        )
    )


def _classify(conn: Connection, network: Network, prior: HeldRoutes | None = None) -> HeldRoutes:
    """Every route with its verdict, ordered as listed; `prior`: what the last snapshot held.

    A snapshot holds the prior one's routes while their rows and the network's rules stand (a status
    report's version moves neither), and a route judged the same keeps its Route: 64 snapshots held
    each their own 1,000 routes, parsed prefixes and reasons was ~110 MB at 1,000 nodes.
    """
    rows = _route_rows(conn)
    rules = (str(network.overlay_cidr), tuple(network.auto_approve))
    if prior is not None and prior.rows == rows and prior.rules == rules:
        return prior
    claims = [_claim(row) for row in rows]
    gateway_ids = {row[5]: row[1] for row in rows}  # name -> node id
    verdicts = route_approval.judge_routes(network.overlay_cidr, claims, network.auto_approve)
    held = (
        {tuple(getattr(route, f) for f in ROUTE_FIELDS): route for route in prior.routes}
        if prior is not None
        else {}
    )
    routes: list[Route] = []
    for v in verdicts:
        fields = {
            "prefix": v.claim.prefix,
            "gateway": v.claim.gateway,
            "gateway_id": gateway_ids[v.claim.gateway],
            "state": v.state,
            "reason": v.reason,
            "conflicting_with": v.other.label if v.other else None,
            "decided_by": v.decided_by,
            "alias": v.claim.alias,
            "alias_by": v.claim.alias_by,
        }
        route = held.get(tuple(fields[f] for f in ROUTE_FIELDS))
        routes.append(route if route is not None else Route.model_validate(fields))
    return HeldRoutes(rows, rules, tuple(routes))


def _give_aliases(conn: Connection) -> int:
    """Give every route in conflict with an earlier one of another site an alias from the network's pool;
    returns how many it gave.

    Called by every write that may make a conflict (routes stated or listed, a decision, the pool set).
    One at a time, oldest first: an alias moves what its route publishes, which may end a later
    conflict. A site's gateways of one prefix share its alias, so they stay an HA group; an alias avoids
    the overlay, every prefix the mesh routes and every VPC's own (a host inside one would take it for
    its own network). A pool without room leaves the conflict as it is.
    """
    network = _network(conn)
    pool = network.alias_pool
    if pool is None:
        return 0
    rows = _route_rows(conn)
    given = 0
    no_room: set[tuple[int, str]] = set()  # (node, prefix) the pool has no block for: left in conflict
    for _ in range(len(rows)):  # a route gets at most one alias: the routes bound the rounds
        claims = [_claim(row) for row in rows]
        verdicts = route_approval.judge_routes(network.overlay_cidr, claims, network.auto_approve)
        index = next(
            (
                i
                for i, v in enumerate(verdicts)
                if _wants_alias(v) and (rows[i][1], str(v.claim.prefix)) not in no_room
            ),
            None,
        )
        if index is None:
            break
        target = claims[index]
        # The site's alias for this prefix, from a claim that is routed (one pending or rejected, which an
        # agent may have named, is no alias of the site's).
        shared = next(
            (
                v.claim.alias
                for v in verdicts
                if v.claim.alias is not None
                and v.state in ("active", "standby")
                and v.claim.prefix == target.prefix
                and v.claim.site_name == target.site_name
            ),
            None,
        )
        taken = [network.overlay_cidr, *(c.prefix for c in claims), *(c.alias for c in claims if c.alias)]
        alias = shared if shared is not None else ipam.allocate_alias(target.prefix, pool, taken)
        if alias is None:
            no_room.add((rows[index][1], str(target.prefix)))
            continue
        conn.execute(
            update(schema.routes)
            .where(schema.routes.c.node_id == rows[index][1], schema.routes.c.prefix == str(target.prefix))
            .values(alias=str(alias), alias_by="pool")
        )
        given += 1
        rows = _route_rows(conn)
    return given


def _wants_alias(verdict: route_approval.Verdict) -> bool:
    """A route without an alias in conflict with one of another site (one of its own site's is no VPC
    overlap, and an alias would not mend it)."""
    other = verdict.other
    return (
        verdict.state == "conflict"
        and verdict.claim.alias is None
        and other is not None
        and other.site_name != verdict.claim.site_name
    )


AliasColumns = tuple[str | None, str | None]
"""A route row's alias and who gave it, as stored."""


def _check_stated_aliases(subnets: Sequence[Prefix], stated: Mapping[Prefix, Prefix]) -> None:
    for prefix, alias in stated.items():
        if prefix not in subnets:
            raise ValidationError(f"an alias for {prefix}, which is not advertised", code="invalid_alias")
        ipam.check_alias(prefix, alias)


def _alias_rows(conn: Connection, node_id: NodeId) -> dict[str, AliasColumns]:
    r = schema.routes.c
    rows = conn.execute(select(r.prefix, r.alias, r.alias_by).where(r.node_id == node_id))
    return {prefix: (alias, by) for prefix, alias, by in rows}


def _republish(
    conn: Connection, node_id: NodeId, prefix: str, columns: AliasColumns, *, keep_approval: bool
) -> None:
    """Publish a route under other alias columns as a new claim: its row made again, so that it ranks
    after every claim made before the change (an alias moved onto a prefix another site publishes, or
    an alias dropped where a later site now holds the prefix, must not take it by the route's age).
    `keep_approval` False: an admin's approval goes with the old publication (a rejection stays)."""
    r = schema.routes.c
    row = dict(
        conn.execute(select(schema.routes).where(r.node_id == node_id, r.prefix == prefix)).mappings().one()
    )
    conn.execute(delete(schema.routes).where(r.id == row.pop("id")))
    row.update(alias=columns[0], alias_by=columns[1], created_at=utcnow())
    if not keep_approval and row["decision"] == "approved":
        row.update(decision=None, decided_by=None, decision_reason=None)
    conn.execute(insert(schema.routes).values(**row))


def _alias_columns(current: AliasColumns, stated: Prefix | None) -> AliasColumns:
    """A route's alias after its agent's statement: an admin's stays; the agent's own is what it states
    now (none: gone); a pool's stays unless the agent names one."""
    if current[1] == "admin":
        return current
    if stated is not None:
        return str(stated), "agent"
    if current[1] == "agent":
        return None, None
    return current


def _alias_changes(
    rows: Mapping[str, AliasColumns], stated: Mapping[Prefix, Prefix]
) -> dict[str, AliasColumns]:
    """The rows (by prefix) whose alias columns the statement changes, with their new values; a prefix
    the statement adds has no row yet and starts without an alias."""
    changes: dict[str, AliasColumns] = {}
    for prefix in {*rows, *(str(p) for p in stated)}:
        current = rows.get(prefix, (None, None))
        wanted = _alias_columns(current, stated.get(ipam.parse_cidr(prefix)))
        if wanted != current:
            changes[prefix] = wanted
    return changes


def _own_routes(routes: Sequence[Route], node_id: int) -> list[Route]:
    return [r for r in routes if r.gateway_id == node_id]


def _route_sort_key(route: Route) -> tuple[int, Any, str]:
    return (route.prefix.version, route.prefix, route.gateway)


def _approved(actor: str | None) -> dict[str, str | None]:
    """The decision columns of a route an admin listed (approved by `actor`); none when no admin did."""
    if actor is None:
        return {}
    return {"decision": "approved", "decided_by": actor, "decision_reason": ""}


def _check_endpoints(endpoints: Sequence[Endpoint], overlay: Prefix) -> None:
    """Refuse endpoints a node reports that no peer should send to (ipam.endpoint_refusal)."""
    for endpoint in endpoints:
        if endpoint.ip is not None and (why := ipam.endpoint_refusal(endpoint.ip, overlay)):
            raise ValidationError(f"endpoint {endpoint}: {why}", code="invalid_endpoint")


RELAY_TICKET_TTL = 24 * 3600.0
"""Relay tickets last a day: relayed traffic outlives a long coordinator outage, a deleted node loses the
relay within a day (agents refresh at half-life)."""


class Registry:
    """The coordinator's state, as use cases."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.admin_tokens = admin_tokens.AdminTokens(store)
        self.audit = AuditLog(store)
        self._snapshot: RegistrySnapshot | None = None
        self._snapshot_lock = threading.Lock()
        self._history: OrderedDict[int, RegistrySnapshot] = OrderedDict()
        """The last snapshots by version, oldest first: what changes are computed from."""
        self._diffs: OrderedDict[tuple[int, int], SnapshotDiff] = OrderedDict()
        self._diffs_lock = threading.Lock()
        self._diff_making = threading.Lock()
        self._node_rows: NodeRows = {}
        self._routes: HeldRoutes | None = None
        """The routes the last snapshot judged: replaced under _snapshot_lock, read anywhere as a prior."""
        self.last_seen = LastSeenBatch(store)
        """Heartbeats' last_seen, written once a second; readers of last_seen flush it first."""
        self._reported: set[tuple[NodeId, str]] = set()
        """Nodes (id and key: a replaced node's new instance has none yet) known to have a report stored."""
        self._outdated: dict[NodeId, str] = {}
        """Nodes whose agent reported a version older than supported, with that version: logged once."""
        self._known: dict[bytes, tuple[NodeId, str, int]] = {}
        """Credentials seen to work (by SHA-256): their node, its key then, and the credential's row."""
        self._live_credentials: LiveCredentials = LiveCredentials(-1, frozenset(), frozenset())
        """The rows of `credentials` at a snapshot's version, read with it (`_vouched`)."""
        self.report_digests = ReportDigests(store)
        self._tally_held: (
            tuple[tuple[NodeId, ...], datetime, int, dict[NodeId, ReportDigest], LinkTally] | None
        ) = None
        self._scale_held: tuple[Any, list[TopologyNodeRow], TopologySummary] | None = None

    # --- set-up and admin credentials ---------------------------------------------------------

    def initialise(self, network: Network, admin_token: str | None = None) -> str | None:
        """Create the schema; return a new admin token (named `init`), or None when one was supplied or
        exists."""
        if admin_token is not None:
            admin_tokens.check_supplied(admin_token)
        self.store.create(network)
        identity.ensure(self.store)
        if admin_token is not None:
            self.admin_tokens.bootstrap(admin_token)
            return None
        if self.admin_tokens.any():
            return None
        return self.admin_tokens.create_init()

    def ensure_admin_token(self, token: str) -> None:
        """Make `token` (WGMESH_ADMIN_TOKEN) the bootstrap admin token (admin_tokens.AdminTokens.bootstrap)."""
        self.admin_tokens.bootstrap(token)

    def is_admin(self, token: str) -> bool:
        """Whether `token` is a live admin token, read-only or not."""
        return self.admin_tokens.identify(token) is not None

    # --- network ------------------------------------------------------------------------------

    def network(self) -> Network:
        """The overlay network."""
        with self.store.read() as conn:
            return _network(conn)

    def patch_network(self, patch: NetworkPatch) -> Network:
        """Change the network-wide P2P policy, default listen port, default tunnel MTU or auto-approve rule."""
        values = patch.model_dump(mode="json", exclude_none=True, exclude={"clear_alias_pool"})
        if patch.clear_alias_pool:
            if patch.alias_pool is not None:
                raise ValidationError("give an alias pool or clear it, not both", code="invalid_alias_pool")
            values["alias_pool"] = None
        if patch.alias_pool is not None:
            ipam.check_alias_pool(patch.alias_pool, self.network().overlay_cidr)
        with self.store.write() as w:
            if values:
                w.conn.execute(update(schema.networks).values(**values))
            _give_aliases(w.conn)  # conflicts that were waiting for a pool (or a new auto-approval)
            return _network(w.conn)

    # --- tokens -------------------------------------------------------------------------------

    def create_token(self, req: TokenCreate) -> TokenCreated:
        """A new enrollment token; its secret is returned this once and stored hashed."""
        secret = secrets.token_urlsafe(32)
        now = utcnow()
        with self.store.write(bump=False) as w:
            if req.replaces is not None:
                self._check_replaceable(w.conn, req.replaces)
            token_id = w.conn.execute(
                insert(schema.tokens)
                .values(
                    secret_hash=keys.hash_secret(secret),
                    reusable=req.reusable,
                    expires_at=now + timedelta(seconds=req.expires_in) if req.expires_in else None,
                    revoked_at=None,
                    uses=0,
                    tags=req.tags,
                    p2p=req.p2p,
                    description=req.description,
                    created_at=now,
                    allow_subnets=[str(p) for p in req.allow_subnets],
                    replaces=req.replaces,
                )
                .returning(schema.tokens.c.id)
            ).scalar_one()
            row = w.conn.execute(select(schema.tokens).where(schema.tokens.c.id == token_id)).mappings().one()
        info = _token_info(row)
        return TokenCreated(**info.model_dump(), token=make_credential("wgt", token_id, secret))

    def list_tokens(self) -> list[TokenInfo]:
        """Every token, newest first."""
        with self.store.read() as conn:
            rows = conn.execute(select(schema.tokens).order_by(schema.tokens.c.id.desc())).mappings()
            return [_token_info(r) for r in rows]

    def revoke_token(self, token_id: int) -> TokenInfo:
        """Revoke a token; revoking twice is harmless."""
        with self.store.write(bump=False) as w:
            row = (
                w.conn.execute(select(schema.tokens).where(schema.tokens.c.id == token_id)).mappings().first()
            )
            if row is None:
                raise NotFoundError(f"token {token_id} does not exist", code="unknown_token")
            if row["revoked_at"] is None:
                w.conn.execute(
                    update(schema.tokens).where(schema.tokens.c.id == token_id).values(revoked_at=utcnow())
                )
            row = w.conn.execute(select(schema.tokens).where(schema.tokens.c.id == token_id)).mappings().one()
            return _token_info(row)

    def _redeem(self, conn: Connection, presented: str) -> RowMapping:
        # A token may carry the coordinator's pin and URLs (join_token.py); only its secret is checked.
        cred = parse_credential(JoinToken.parse(presented).secret, "wgt")
        row = conn.execute(select(schema.tokens).where(schema.tokens.c.id == cred.id)).mappings().first()
        if row is None or not keys.secret_matches(cred.secret, row["secret_hash"]):
            raise AuthError("enrollment token is not valid", code="invalid_token")
        if row["revoked_at"] is not None:
            raise AuthError("enrollment token has been revoked", code="token_revoked")
        expires_at = as_utc(row["expires_at"])
        if expires_at is not None and expires_at <= utcnow():
            raise AuthError("enrollment token has expired", code="token_expired")
        # The conditional update is the arbiter between concurrent redemptions of a one-time token.
        used = conn.execute(
            update(schema.tokens)
            .where(
                schema.tokens.c.id == cred.id,
                or_(schema.tokens.c.reusable.is_(True), schema.tokens.c.uses == 0),
            )
            .values(uses=schema.tokens.c.uses + 1)
        )
        if used.rowcount != 1:
            raise AuthError("enrollment token has already been used", code="token_used")
        return row

    def _check_replaceable(self, conn: Connection, name: str) -> None:
        """A token may replace `name` only if such a node exists and has an agent."""
        row = conn.execute(select(schema.nodes.c.static).where(schema.nodes.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no node named {name!r} to replace", code="unknown_node")
        if row.static:
            raise ValidationError(
                f"node {name!r} is a static peer without an agent: delete it and create it again",
                code="static_node",
            )

    # --- nodes --------------------------------------------------------------------------------

    def _check_unique(self, conn: Connection, name: str, public_key: str) -> None:
        if conn.execute(select(schema.nodes.c.id).where(schema.nodes.c.name == name)).first():
            raise ConflictError(f"a node named {name!r} already exists", code="duplicate_name")
        _check_key_free(conn, public_key)

    def _insert_node(
        self,
        w: Writer,
        *,
        name: str,
        public_key: str,
        listen_port: int,
        subnets: Sequence[Prefix],
        endpoints: Sequence[Endpoint],
        p2p: P2PPolicy,
        tags: Sequence[str],
        private_key: str | None,
        max_mtu: int | None = None,
        allow_subnets: Sequence[str] = (),
        approved_by: str | None = None,
        site: str | None = None,
    ) -> NodeId:
        network = _network(w.conn)
        overlay = network.overlay_cidr
        ipam.check_own_subnets(subnets, overlay)
        self._check_unique(w.conn, name, public_key)
        used = [
            ipaddress.ip_address(ip) for ip in w.conn.execute(select(schema.nodes.c.overlay_ip)).scalars()
        ]
        address = ipam.allocate(overlay, used)
        now = utcnow()
        try:
            node_id = NodeId(
                w.conn.execute(
                    insert(schema.nodes)
                    .values(
                        name=name,
                        public_key=public_key,
                        overlay_ip=str(address),
                        p2p=p2p,
                        tags=sorted(set(tags)),
                        listen_port=listen_port,
                        endpoints=[str(e) for e in endpoints],
                        static=private_key is not None,
                        private_key=private_key,
                        max_mtu=max_mtu,
                        allow_subnets=list(allow_subnets),
                        created_at=now,
                        site=site if site is not None else name,
                    )
                    .returning(schema.nodes.c.id)
                ).scalar_one()
            )
        except IntegrityError as exc:
            raise ConflictError("the node collides with an existing one", code="duplicate_node") from exc
        for prefix in subnets:
            w.conn.execute(
                insert(schema.routes).values(
                    node_id=node_id, prefix=str(prefix), created_at=now, **_approved(approved_by)
                )
            )
        if subnets:
            _give_aliases(w.conn)
        return node_id

    def enroll(self, req: EnrollRequest) -> tuple[NodeId, str, NetMap]:
        """Redeem a token for a new node: returns its id, its credential (shown once), its netmap.

        A token that replaces a node enrolls only that name; when the node exists, the new instance takes
        its place (`_replace_node`) instead of adding one. The same request again, after an answer lost
        on the way, gets the node it made with a new credential (`_enrolled_again`).
        """
        with self.store.write() as w:
            node_id = self._enrolled_again(w, req)
            if node_id is None:
                try:
                    node_id = self._redeem_for_node(w, req)
                except AuthError as exc:
                    # The first attempt may have been committing on another coordinator while this one
                    # looked: its token row was locked, and is used now. Look again (a new statement sees
                    # that commit), so that a retry racing its own first try is not refused.
                    again = self._enrolled_again(w, req) if exc.code == "token_used" else None
                    if again is None:
                        raise
                    node_id = again
            secret = secrets.token_urlsafe(32)
            w.conn.execute(
                insert(schema.credentials).values(
                    node_id=node_id, secret_hash=keys.hash_secret(secret), created_at=utcnow()
                )
            )
        return node_id, make_credential("wgn", node_id, secret), self._netmap_after(node_id)

    def _redeem_for_node(self, w: Writer, req: EnrollRequest) -> NodeId:
        """Redeem the token for a new node, or for the node it replaces; the token records which."""
        token = self._redeem(w.conn, req.token)
        _check_endpoints(req.endpoints, _network(w.conn).overlay_cidr)
        replaces = token["replaces"]
        if replaces is not None and replaces != req.name:
            raise ForbiddenError(
                f"this enrollment token enrolls only node {replaces!r}", code="token_for_other_node"
            )
        existing = w.conn.execute(select(schema.nodes.c.id).where(schema.nodes.c.name == req.name)).scalar()
        if replaces is not None and existing is not None:
            node_id = self._replace_node(w, NodeId(int(existing)), req, token)
        else:
            node_id = self._enroll_new(w, req, token)
        w.conn.execute(
            update(schema.tokens)
            .where(schema.tokens.c.id == token["id"])
            .values(enrolled_node=node_id, enrolled_at=utcnow())
        )
        return node_id

    def _enrolled_again(self, w: Writer, req: EnrollRequest) -> NodeId | None:
        """The node this token enrolled with this name and key, its credentials retired, when the request
        repeats one whose answer was lost (the caller gives it a new credential); None for any other.

        Only the token's secret holder knows to send it, only for the node that token made, with its key,
        within ENROLL_RETRY_WINDOW and before the node ever reported: the credential it was given then
        was never used, and it is retired here (docs/security.md, "Enrollment retried").
        """
        cred = parse_credential(JoinToken.parse(req.token).secret, "wgt")
        t, n = schema.tokens.c, schema.nodes.c
        token = w.conn.execute(select(schema.tokens).where(t.id == cred.id)).mappings().first()
        if token is None or not keys.secret_matches(cred.secret, token["secret_hash"]):
            return None
        enrolled_at = as_utc(token["enrolled_at"])
        if token["revoked_at"] is not None or token["enrolled_node"] is None or enrolled_at is None:
            return None
        if token["reusable"]:
            # A reusable token is shared by a fleet: its other holders see this node's name and key in
            # their netmaps, so they could "retry" its enrollment and take its credential.
            return None
        if utcnow() - enrolled_at > ENROLL_RETRY_WINDOW:
            return None
        node = (
            w.conn.execute(
                select(n.id, n.name, n.public_key, n.last_seen).where(n.id == token["enrolled_node"])
            )
            .mappings()
            .first()
        )
        if node is None or (node["name"], node["public_key"]) != (req.name, req.public_key):
            return None
        if node["last_seen"] is not None:
            return None  # its agent has its credential: this is no lost answer
        node_id = NodeId(node["id"])
        w.conn.execute(delete(schema.credentials).where(schema.credentials.c.node_id == node_id))
        detail = {"node_id": node_id, "key": keys.fingerprint(req.public_key)}
        actor = f"token:{token['id']}"
        write_entry(w.conn, actor=actor, action="node.enroll_again", target=req.name, detail=detail)
        return node_id

    def _enroll_new(self, w: Writer, req: EnrollRequest, token: RowMapping) -> NodeId:
        return self._insert_node(
            w,
            name=req.name,
            public_key=req.public_key,
            listen_port=req.listen_port,
            subnets=req.subnets,
            endpoints=req.endpoints,
            p2p=token["p2p"] or "auto",
            tags=token["tags"],
            private_key=None,
            max_mtu=req.max_mtu,
            allow_subnets=token["allow_subnets"] or [],
            site=req.site,
        )

    def _replace_node(self, w: Writer, node_id: NodeId, req: EnrollRequest, token: RowMapping) -> NodeId:
        """A new instance takes node `node_id`'s place: same id, overlay IP, routes (with their decisions),
        tags and overrides; its own key, port and endpoints. What the old instance held dies here: its
        credentials, its relay tickets and every preshared key of its pairs."""
        node = self._node_by_id(w.conn, node_id)
        self._check_replaceable(w.conn, node.name)
        _check_key_free(w.conn, req.public_key, holder=node_id)
        allowed = list(
            dict.fromkeys([*self._allow_subnets(w.conn, node_id), *(token["allow_subnets"] or [])])
        )
        w.conn.execute(
            update(schema.nodes)
            .where(schema.nodes.c.id == node_id)
            .values(
                public_key=req.public_key,
                listen_port=req.listen_port,
                endpoints=[str(e) for e in req.endpoints],
                eth0_ip=None,
                public_ip=None,
                last_seen=None,
                max_mtu=req.max_mtu,
                allow_subnets=allowed,
                rotate_requested_at=None,
                tcp_port=None,  # the old instance's listener; the new one reports its own
                tcp_pin=None,
                site=req.site if req.site is not None else node.name,
            )
        )
        for table, column in (
            (schema.credentials, schema.credentials.c.node_id),
            (schema.status, schema.status.c.node_id),
        ):
            w.conn.execute(delete(table).where(column == node_id))
        _renew_psks(w.conn, node_id)
        _revoke_tickets(w.conn, node_id, utcnow().timestamp())
        _give_aliases(w.conn)  # its site and rules may have changed, and with them its routes' verdicts
        write_entry(
            w.conn,
            actor=f"token:{token['id']}",
            action="node.replace",
            target=node.name,
            detail={"node_id": node_id, "old_key": keys.fingerprint(node.public_key)},
        )
        return node_id

    def _allow_subnets(self, conn: Connection, node_id: NodeId) -> list[str]:
        found = conn.execute(
            select(schema.nodes.c.allow_subnets).where(schema.nodes.c.id == node_id)
        ).scalar()
        return list(found or [])

    def create_static_node(self, req: NodeCreate, actor: str = "admin") -> tuple[Node, str | None]:
        """A node for a device without an agent; with `generate_keys` the coordinator makes its keys.

        An admin lists its subnets, so `actor` (who made the call) approves them."""
        if req.generate_keys == (req.public_key is not None):
            raise ValidationError(
                "give either generate_keys: true or a public_key, not both or neither", code="invalid_keys"
            )
        pair = keys.generate_keypair() if req.generate_keys else None
        public_key = pair.public_key if pair else req.public_key
        assert public_key is not None
        with self.store.write() as w:
            node_id = self._insert_node(
                w,
                name=req.name,
                public_key=public_key,
                listen_port=req.listen_port,
                subnets=req.subnets,
                endpoints=req.endpoints,
                p2p=req.p2p,
                tags=req.tags,
                private_key=pair.private_key if pair else None,
                approved_by=actor,
            )
            node = self._node_by_id(w.conn, node_id)
        return node, pair.private_key if pair else None

    def authenticate_node(self, presented: str) -> NodeId:
        """The node id a credential belongs to, or AuthError.

        A node holds two credentials only between a key rotation and its agent's first call with the new
        one: that call retires the older (so a rotation whose answer was lost can be asked again).
        """
        cred = parse_credential(presented, "wgn", error="node credential is not valid")
        c = schema.credentials.c
        seen = hashlib.sha256(presented.encode()).digest()
        vouched = self._vouched(seen)
        if vouched is not None:
            return vouched
        try:
            with self.store.read() as conn:
                rows = conn.execute(select(c.id, c.secret_hash).where(c.node_id == cred.id)).all()
                key = conn.execute(
                    select(schema.nodes.c.public_key).where(schema.nodes.c.id == cred.id)
                ).scalar()
        except StoreError as exc:
            # Without its database the coordinator still serves netmaps to the agents it knew: what
            # it holds in memory is all it can give, and writes are refused anyway (docs/security.md).
            if exc.code == UNAVAILABLE and self._still_known(seen):
                return NodeId(cred.id)
            raise
        matched: int | None = None
        for row in rows:  # every row is compared: the time taken does not say which one matched
            if keys.secret_matches(cred.secret, row.secret_hash):
                matched = row.id
        if matched is None:
            raise AuthError("node credential is not valid", code="invalid_credential")
        if any(row.id < matched for row in rows):
            # No version: every coordinator asks the database for a node holding two credentials
            # (`_vouched`), until a later snapshot shows one.
            with self.store.write(bump=False) as w:
                w.conn.execute(delete(schema.credentials).where(c.node_id == cred.id, c.id < matched))
            # the retired ones must not outlive the database's answer in memory
            self._known = {k: v for k, v in list(self._known.items()) if v[0] != cred.id}
        if len(self._known) >= MAX_KNOWN_CREDENTIALS:
            self._known.clear()  # bounded: a flood of valid credentials cannot grow it
        self._known[seen] = (NodeId(cred.id), str(key), matched)
        return NodeId(cred.id)

    def _vouched(self, seen: bytes) -> NodeId | None:
        """The node of a credential seen to work, from memory (no database read for most of an agent's
        calls): its row is the only one of its node among those read with the current snapshot, and the
        node is there under the key it had. A credential goes with a version (a deletion, a replacement,
        an enrollment answered again) or retires its node's older one (after a rotation, without a
        version): a node holding two is asked of the database every time, on every coordinator, until a
        snapshot shows it with one."""
        if seen not in self._known:
            return None
        try:
            snap = self.snapshot(VERSION_TRUST)
        except StoreError:
            return None  # the database's answer (or its absence) decides, as without a memory
        return self._vouched_in(seen, snap)

    def authenticate_held(self, presented: str) -> NodeId | None:
        """`authenticate_node` from memory alone, never the database nor a snapshot to build: fit for the
        event loop. None: ask `authenticate_node` (on a worker thread)."""
        held = self._snapshot
        if held is None or self.store.version_known(VERSION_TRUST) != held.version:
            return None
        return self._vouched_in(hashlib.sha256(presented.encode()).digest(), held)

    def _vouched_in(self, seen: bytes, snap: RegistrySnapshot) -> NodeId | None:
        found = self._known.get(seen)
        if found is None:
            return None
        node_id, key, row = found
        live = self._live_credentials
        node = snap.by_id.get(node_id)
        if live.version != snap.version or row not in live.rows or node_id in live.shared:
            return None
        return node_id if node is not None and node.public_key == key else None

    def _still_known(self, seen: bytes) -> bool:
        """Whether a credential seen working may still be served from memory: its node is in the snapshot
        held, under the key it had then. A node deleted, replaced or rotated (on any coordinator, as far as
        the snapshot goes) no longer passes with a credential of its former instance."""
        found, held = self._known.get(seen), self._snapshot
        if found is None or held is None:
            return False
        node_id, key, _row = found
        node = held.by_id.get(node_id)
        return node is not None and node.public_key == key

    # --- key rotation -------------------------------------------------------------------------

    def request_rotation(self, ref: str) -> Node:
        """Ask node `ref`'s agent for a new key (its netmap says so); a static peer whose keys the
        coordinator made gets new ones at once (its configuration must be exported again)."""
        with self.store.write() as w:
            node_id = self._resolve(w.conn, ref)
            node = self._node_by_id(w.conn, node_id)
            has_agent = w.conn.execute(
                select(schema.credentials.c.id).where(schema.credentials.c.node_id == node_id).limit(1)
            ).first()
            if has_agent is not None:
                w.conn.execute(
                    update(schema.nodes)
                    .where(schema.nodes.c.id == node_id)
                    .values(rotate_requested_at=utcnow())
                )
                return self._node_by_id(w.conn, node_id)
            private = w.conn.execute(
                select(schema.nodes.c.private_key).where(schema.nodes.c.id == node_id)
            ).scalar()
            if private is None:
                raise ValidationError(
                    f"node {node.name!r} has no agent and holds its own private key: delete it and "
                    "create it again with its new public key",
                    code="not_rotatable",
                )
            pair = keys.generate_keypair()
            self._set_key(w, node, pair.public_key)  # the admin's call is audited as node.rotate
            w.conn.execute(
                update(schema.nodes).where(schema.nodes.c.id == node_id).values(private_key=pair.private_key)
            )
            return self._node_by_id(w.conn, node_id)

    def rotate_key(self, node_id: NodeId, public_key: str) -> tuple[str, NetMap]:
        """Node `node_id` (its agent) takes `public_key`: a new credential, and its netmap with the key.

        Asking again with the key it already holds (the answer to the first was lost) gives another
        credential and changes nothing else; the old credential works until a new one is used. Another
        key is taken only while an admin's request stands: a stolen credential alone must not be enough
        to give the node a key of the thief's choosing.
        """
        # Always a version: whether the key changes is known only inside the transaction, and a change
        # without one would leave every coordinator's snapshot (kept per version) stale.
        with self.store.write() as w:
            node = self._node_by_id(w.conn, node_id)
            if node.public_key != public_key:
                if node.rotate_requested_at is None:
                    raise ForbiddenError(
                        f"node {node.name!r} was not asked to rotate its key (wgmesh nodes rotate)",
                        code="rotation_not_requested",
                    )
                self._set_key(w, node, public_key, agent=True)
            c = schema.credentials.c
            # Bounded: the credential in use (the oldest) and the one answered now; those of earlier
            # answers that were lost on the way go.
            oldest = w.conn.execute(select(func.min(c.id)).where(c.node_id == node_id)).scalar()
            if oldest is not None:
                w.conn.execute(delete(schema.credentials).where(c.node_id == node_id, c.id != oldest))
            secret = secrets.token_urlsafe(32)
            w.conn.execute(
                insert(schema.credentials).values(
                    node_id=node_id, secret_hash=keys.hash_secret(secret), created_at=utcnow()
                )
            )
        return make_credential("wgn", node_id, secret), self._netmap_after(node_id)

    def _set_key(self, w: Writer, node: Node, public_key: str, *, agent: bool = False) -> None:
        _check_key_free(w.conn, public_key)
        w.conn.execute(
            update(schema.nodes)
            .where(schema.nodes.c.id == node.id)
            .values(public_key=public_key, rotate_requested_at=None)
        )
        # The preshared keys stay: the agent sets its new key on the interface before the peers learn it,
        # which keeps the rotation's gap short, and it cannot know new preshared keys that early. They are
        # worth nothing without a pair's private keys, and a replacement (a lost instance) renews them.
        if not agent:
            return
        write_entry(
            w.conn,
            actor=f"node:{node.name}",
            action="node.rotate_key",
            target=node.name,
            detail={"old_key": keys.fingerprint(node.public_key), "new_key": keys.fingerprint(public_key)},
        )

    def _node_by_id(self, conn: Connection, node_id: NodeId) -> Node:
        row = conn.execute(select(schema.nodes).where(schema.nodes.c.id == node_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"node {node_id} does not exist", code="unknown_node")
        subnets = conn.execute(
            select(schema.routes.c.prefix)
            .where(schema.routes.c.node_id == node_id)
            .order_by(schema.routes.c.id)
        ).scalars()
        return _node(row, list(subnets), utcnow())

    def _resolve(self, conn: Connection, ref: str) -> NodeId:
        # No stored name holds a NUL (names are hostname labels): PostgreSQL refuses one in a query's text
        # with an error, where the answer is simply "no such node".
        found = (
            None
            if "\x00" in ref
            else conn.execute(select(schema.nodes.c.id).where(schema.nodes.c.name == ref)).scalar()
        )
        if found is None and (node_id := row_id(ref)) is not None:
            found = conn.execute(select(schema.nodes.c.id).where(schema.nodes.c.id == node_id)).scalar()
        if found is None:
            raise NotFoundError(f"no node named {ref!r}", code="unknown_node")
        return NodeId(int(found))

    def list_nodes(self) -> list[Node]:
        """Every node, sorted by name."""
        self.last_seen.flush()
        with self.store.read() as conn:
            return _load_nodes(conn)

    def get_node(self, ref: str) -> Node:
        """A node by name (or numeric id)."""
        self.last_seen.flush()
        with self.store.read() as conn:
            return self._node_by_id(conn, self._resolve(conn, ref))

    def node_private_key(self, ref: str) -> tuple[Node, str]:
        """A static node and the private key the coordinator holds for it."""
        with self.store.read() as conn:
            node_id = self._resolve(conn, ref)
            key = conn.execute(
                select(schema.nodes.c.private_key).where(schema.nodes.c.id == node_id)
            ).scalar()
            node = self._node_by_id(conn, node_id)
        if key is None:
            raise ValidationError(
                f"node {node.name!r} holds its own private key; only static peers can be exported",
                code="not_static",
            )
        return node, str(key)

    def patch_node(self, ref: str, patch: NodePatch, actor: str = "admin") -> Node:
        """Change a node's P2P policy, advertised subnets, tags, bandwidth limit or MTU ceiling.

        Subnets an admin lists are approved by `actor` (who made the call), those kept included."""
        with self.store.write() as w:
            node_id = self._resolve(w.conn, ref)
            values: dict[str, Any] = {}
            if patch.p2p is not None:
                values["p2p"] = patch.p2p
            if patch.tags is not None:
                values["tags"] = sorted(set(patch.tags))
            if "rate" in patch.model_fields_set:
                values["rate"] = patch.rate  # an explicit null removes the limit
            if "mtu" in patch.model_fields_set:
                values["mtu"] = patch.mtu  # an explicit null falls back to the network's default
            if values:
                w.conn.execute(update(schema.nodes).where(schema.nodes.c.id == node_id).values(**values))
            if patch.subnets is not None:
                self._replace_subnets(w.conn, node_id, patch.subnets, approved_by=actor)
                _give_aliases(w.conn)
            return self._node_by_id(w.conn, node_id)

    def set_own_subnets(
        self,
        node_id: NodeId,
        subnets: Sequence[Prefix],
        site: str | None = None,
        aliases: Mapping[Prefix, Prefix] | None = None,
    ) -> list[Route]:
        """A node states what it serves: its list becomes exactly `subnets` (empty withdraws all), its
        site `site` (None: a site of its own, named after it), its own aliases `aliases`.

        Every agent states its set at every start, so the same statement again writes nothing and leaves
        the version alone: a fleet restart must not wake every long-poll. A new site is the node's own
        statement (its credential), written like its subnets, and reclassifies every route (an identical
        prefix of its new site makes an HA group, of another a conflict). An alias an admin set stays
        whatever the agent states (`_alias_columns`). Returns the verdict on each.
        """
        stated = dict(aliases or {})
        _check_stated_aliases(subnets, stated)
        with self.store.read() as conn:
            node = self._node_by_id(conn, node_id)
            wanted_site = site if site is not None else node.name
            # A stored list was checked when it was written; a request listing a prefix twice is not it.
            if (
                set(node.subnets) == set(subnets)
                and len(set(subnets)) == len(subnets)
                and node.site == wanted_site
                and not _alias_changes(_alias_rows(conn, node_id), stated)
            ):
                # A fleet's restart: a thousand of these, each judging every route, unless the routes
                # the last snapshot judged stand (the rows are still read and compared).
                return _own_routes(_classify(conn, _network(conn), self._routes).routes, node_id)
        with self.store.write() as w:
            self._node_by_id(w.conn, node_id)
            self._replace_subnets(w.conn, node_id, subnets)
            w.conn.execute(update(schema.nodes).where(schema.nodes.c.id == node_id).values(site=wanted_site))
            for prefix, columns in _alias_changes(_alias_rows(w.conn, node_id), stated).items():
                # An admin's approval covered the route as it was published then, not an alias the agent
                # names now: that one is judged by the rules (or waits for an admin) like a new prefix.
                _republish(w.conn, node_id, prefix, columns, keep_approval=columns[1] != "agent")
            _give_aliases(w.conn)
            return _own_routes(_classify(w.conn, _network(w.conn), self._routes).routes, node_id)

    def _replace_subnets(
        self, conn: Connection, node_id: NodeId, subnets: Sequence[Prefix], approved_by: str | None = None
    ) -> None:
        ipam.check_own_subnets(subnets, _network(conn).overlay_cidr)
        # The table holds canonical text: prefixes become strings here, at the SQL edge, and nowhere else.
        wanted = [str(s) for s in subnets]
        current = set(
            conn.execute(select(schema.routes.c.prefix).where(schema.routes.c.node_id == node_id)).scalars()
        )
        # Prefixes kept keep their row, and with it their seniority in route classification.
        gone = current - set(wanted)
        if gone:
            conn.execute(
                delete(schema.routes).where(
                    schema.routes.c.node_id == node_id, schema.routes.c.prefix.in_(gone)
                )
            )
        now = utcnow()
        for prefix in wanted:
            if prefix not in current:
                conn.execute(
                    insert(schema.routes).values(
                        node_id=node_id, prefix=prefix, created_at=now, **_approved(approved_by)
                    )
                )
        if approved_by is not None and wanted:
            conn.execute(
                update(schema.routes)
                .where(schema.routes.c.node_id == node_id, schema.routes.c.prefix.in_(wanted))
                .values(**_approved(approved_by))
            )

    def delete_node(self, ref: str) -> Node:
        """Remove a node with its routes, credentials, pair overrides and status."""
        with self.store.write() as w:
            node_id = self._resolve(w.conn, ref)
            node = self._node_by_id(w.conn, node_id)
            # Explicit deletes, so that behaviour does not hinge on the backend's cascade support.
            for table, column in (
                (schema.routes, schema.routes.c.node_id),
                (schema.credentials, schema.credentials.c.node_id),
                (schema.status, schema.status.c.node_id),
            ):
                w.conn.execute(delete(table).where(column == node_id))
            w.conn.execute(
                delete(schema.pairs).where(
                    or_(schema.pairs.c.node_a == node_id, schema.pairs.c.node_b == node_id)
                )
            )
            w.conn.execute(delete(schema.nodes).where(schema.nodes.c.id == node_id))
            _revoke_tickets(w.conn, node_id, utcnow().timestamp())
            return node

    # --- routes and pairs ---------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """Every route with its verdict, sorted by prefix then gateway."""
        with self.store.read() as conn:
            # The routes held, unless a row moved since the last snapshot: an admin's listing of a
            # thousand routes then judges them without building a thousand Route models again.
            return sorted(_classify(conn, _network(conn), self._routes).routes, key=_route_sort_key)

    def decide_route(
        self, ref: str, prefix: Prefix, verdict: Decision, actor: str, reason: str = ""
    ) -> Route:
        """An admin approves or rejects a prefix node `ref` advertises; the route with its new verdict.

        The decision lives on the route row: it lasts while the node advertises the prefix, and a
        withdrawn and re-advertised prefix is a new claim that the rules judge again.
        """
        with self.store.write() as w:
            node_id = self._resolve(w.conn, ref)
            done = w.conn.execute(
                update(schema.routes)
                .where(schema.routes.c.node_id == node_id, schema.routes.c.prefix == str(prefix))
                .values(decision=verdict, decided_by=actor, decision_reason=reason)
            )
            if done.rowcount != 1:
                raise NotFoundError(f"node {ref!r} does not advertise {prefix}", code="unknown_route")
            _give_aliases(w.conn)
            routes = _classify(w.conn, _network(w.conn), self._routes).routes
        return next(r for r in routes if r.gateway_id == node_id and r.prefix == prefix)

    def set_route_alias(self, ref: str, prefix: Prefix, alias: Prefix | None) -> Route:
        """An admin publishes the prefix node `ref` advertises under `alias` (None: at itself again, or
        at a pool's alias when it is still in conflict and the network has a pool); the route as judged.

        The alias is part of the route: classified, approved and carried in netmaps like its prefix. Its
        gateway translates between the two (agent/ruleset.py).
        """
        if alias is not None:
            ipam.check_alias(prefix, alias)
        with self.store.write() as w:
            node_id = self._resolve(w.conn, ref)
            if str(prefix) not in _alias_rows(w.conn, node_id):
                raise NotFoundError(f"node {ref!r} does not advertise {prefix}", code="unknown_route")
            columns = (str(alias), "admin") if alias is not None else (None, None)
            _republish(w.conn, node_id, str(prefix), columns, keep_approval=True)
            _give_aliases(w.conn)
            routes = _classify(w.conn, _network(w.conn), self._routes).routes
        return next(r for r in routes if r.gateway_id == node_id and r.prefix == prefix)

    def set_pair(self, a: str, b: str, changes: Mapping[str, str | None]) -> PairPolicy | None:
        """Set (or with None clear) a node pair's `p2p` and/or `rate` override; None when none is left."""
        with self.store.write() as w:
            ida, idb = self._resolve(w.conn, a), self._resolve(w.conn, b)
            if ida == idb:
                raise ValidationError("a pair needs two different nodes", code="invalid_pair")
            low, high = pair_key(ida, idb)
            where = and_(schema.pairs.c.node_a == low, schema.pairs.c.node_b == high)
            values = {k: v for k, v in changes.items() if k in ("p2p", "rate")}
            row = w.conn.execute(select(schema.pairs).where(where)).mappings().first()
            if row is None:
                w.conn.execute(
                    insert(schema.pairs).values(node_a=low, node_b=high, psk_generation=0, **values)
                )
            elif values:
                w.conn.execute(update(schema.pairs).where(where).values(**values))
            row = w.conn.execute(select(schema.pairs).where(where)).mappings().one()
        if row["p2p"] is None and row["rate"] is None:
            return None
        return PairPolicy(a=a, b=b, p2p=row["p2p"], rate=row["rate"])

    def list_pairs(self) -> list[PairPolicy]:
        """Every pair with an override (P2P policy or bandwidth limit)."""
        with self.store.read() as conn:
            names: dict[int, str] = {
                node_id: name
                for node_id, name in conn.execute(select(schema.nodes.c.id, schema.nodes.c.name))
            }
            rows = conn.execute(
                select(schema.pairs).where(
                    or_(schema.pairs.c.p2p.is_not(None), schema.pairs.c.rate.is_not(None))
                )
            ).mappings()
            return [
                PairPolicy(a=names[r["node_a"]], b=names[r["node_b"]], p2p=r["p2p"], rate=r["rate"])
                for r in rows
            ]

    # --- netmaps ------------------------------------------------------------------------------

    def _snapshot_from(self, conn: Connection, version: int) -> RegistrySnapshot:
        network = _network(conn)
        pair_p2p: dict[tuple[int, int], P2PPolicy] = {}
        pair_rate: dict[tuple[int, int], str] = {}
        generation: dict[tuple[int, int], int] = {}
        for r in conn.execute(select(schema.pairs)).mappings():
            key = (r["node_a"], r["node_b"])
            if r["p2p"]:
                pair_p2p[key] = r["p2p"]
            if r["rate"]:
                pair_rate[key] = r["rate"]
            generation[key] = r["psk_generation"]
        master = conn.execute(select(schema.registry.c.psk_master)).scalar_one()
        nodes, self._node_rows = _snapshot_nodes(conn, self._node_rows)
        self._routes = _classify(conn, network, self._routes)
        prior = self._snapshot
        if prior is not None:
            # Held snapshots share the pair maps that did not change (one per key rotated or node
            # replaced: up to n²/2 rows, 64 MB at 1,000 nodes), and netmap_delta.diff skips shared ones.
            pair_p2p = prior.pair_p2p if pair_p2p == prior.pair_p2p else pair_p2p  # type: ignore[assignment]
            pair_rate = prior.pair_rate if pair_rate == prior.pair_rate else pair_rate  # type: ignore[assignment]
            if generation == prior.psk_generation:
                generation = prior.psk_generation  # type: ignore[assignment]
        return RegistrySnapshot(
            version=version,
            network=network,
            nodes=nodes,
            routes=self._routes.routes,
            pair_p2p=pair_p2p,
            pair_rate=pair_rate,
            psk_generation=generation,
            psk_master=bytes(master),
            coordinator_next_pin=str(staged) if (staged := identity.next_pin(conn)) else None,
            prior_templates=self._snapshot.templates_by_key if self._snapshot is not None else {},
        )

    def snapshot(self, max_age: float = 0.0) -> RegistrySnapshot:
        """A consistent view of the registry, reused while the version stands still; while the database
        is unavailable, the last one held (netmaps keep flowing, nothing can change meanwhile here).
        `max_age`: the version may be the one the store learnt that long ago (Store.version), for the
        agents' calls, a thousand at a time; an admin's read asks the database."""
        held = self._snapshot
        observed: int | None = None
        if held is not None:
            # The common case, without the lock: a thousand long-polls woken at once each look up the
            # version (as the store learnt it: VERSION_TRUST); only a new one is built, by the first that
            # finds it, in turn.
            try:
                observed = self.store.version(max_age=max_age)
                if observed == held.version:
                    return held
            except StoreError as exc:
                if exc.code != UNAVAILABLE:
                    raise
                return held
        with self._snapshot_lock:
            current = self._snapshot
            if current is not None and current is not held and current.version == observed:
                return current  # built while this thread waited for the lock: the others need not read
            try:
                with self.store.read() as conn:
                    version = int(conn.execute(select(schema.registry.c.version)).scalar_one())
                    if self._snapshot is None or self._snapshot.version != version:
                        if self._snapshot is not None and version < self._snapshot.version:
                            # A database restored or failed over to an older state: the versions held
                            # will be numbers of other contents once it counts up again.
                            self._history.clear()
                            with self._diffs_lock:
                                self._diffs.clear()
                        made = self._snapshot_from(conn, version)
                        c = schema.credentials.c
                        rows = conn.execute(select(c.id, c.node_id))
                        live = LiveCredentials.of(version, (tuple(r) for r in rows))
                        # Both read before either is taken: a read that fails leaves the pair as it was.
                        self._snapshot, self._live_credentials = made, live
                        self._hold(made)
            except StoreError as exc:
                if exc.code != UNAVAILABLE or self._snapshot is None:
                    raise
            return self._snapshot

    def snapshot_held(self, max_age: float) -> RegistrySnapshot | None:
        """The snapshot held when its version is the one the store learnt at most `max_age` seconds ago:
        no database read and no lock, fit for the event loop; None: ask `snapshot`."""
        held = self._snapshot
        if held is None or self.store.version_known(max_age) != held.version:
            return None
        return held

    def cheap_change(self, snapshot: RegistrySnapshot, node_id: NodeId, since: int) -> NetMapChange | None:
        """`netmap_change(snapshot, node_id, since)` when it is cheap enough for the event loop: the diff is
        made, and the change is one of at most CHEAP_PEERS peers (not a whole netmap: the network or the
        node's own P2P setting moved); None otherwise, and nothing is made."""
        old = self._history.get(since)
        with self._diffs_lock:
            changes = self._diffs.get((since, snapshot.version))
        if old is None or changes is None or changes.whole:
            return None
        me, before = snapshot.by_id.get(node_id), old.by_id.get(node_id)
        if me is None or before is None or before.p2p != me.p2p:
            return None
        if len(changes.changed) + len(changes.pairs.get(node_id, ())) > CHEAP_PEERS:
            return None
        return netmap_delta.change(old, snapshot, changes, node_id)

    def _hold(self, snapshot: RegistrySnapshot) -> None:
        self._history[snapshot.version] = snapshot
        self._history.move_to_end(snapshot.version)
        while len(self._history) > HELD_VERSIONS:
            self._history.popitem(last=False)

    def netmap_change(self, snapshot: RegistrySnapshot, node_id: NodeId, since: int) -> NetMapChange:
        """`node_id`'s netmap at `snapshot` as the change from version `since`, when that version's
        snapshot is held; whole otherwise."""
        old = self._history.get(since) if since != snapshot.version else None
        if old is None:
            return netmap_delta.change(None, snapshot, None, node_id)
        key = (old.version, snapshot.version)
        with self._diffs_lock:  # held for lookups only: the event loop takes it too (change_is_cheap)
            changes = self._diffs.get(key)
        if changes is None:
            # One diff per pair of versions, however many agents ask: the first makes it, the others
            # wait for it here.
            with self._diff_making:
                with self._diffs_lock:
                    changes = self._diffs.get(key)
                if changes is None:
                    changes = netmap_delta.diff(old, snapshot)
                    with self._diffs_lock:
                        self._diffs[key] = changes
                        while len(self._diffs) > HELD_VERSIONS:
                            self._diffs.popitem(last=False)
        return netmap_delta.change(old, snapshot, changes, node_id)

    def _netmap_after(self, node_id: NodeId) -> NetMap:
        """The netmap of a node just written, from the snapshot long-polls share: built after the commit,
        not inside the write (which would hold every other writer up for the O(nodes) build), and once per
        version for a burst of enrollments. It may be of a later version than the write: only newer."""
        snapshot = self.snapshot()
        if node_id not in snapshot.by_id:
            # The database went away between the commit and this read (the snapshot held is older): the
            # write may be in, so the client may send it again elsewhere, where _enrolled_again answers.
            raise StoreError(
                "the database was lost after the change was committed: ask again", code="commit_unknown"
            )
        return build_netmap(snapshot, node_id)

    def held_version(self) -> int | None:
        """The version of the snapshot held in memory (what long-polls get without the database)."""
        held = self._snapshot
        return held.version if held is not None else None

    def netmap(self, node_id: NodeId) -> NetMap:
        """The current netmap of a node."""
        return build_netmap(self.snapshot(), node_id)

    # --- relay tickets --------------------------------------------------------------------------

    def relay_signing_key(self) -> str:
        """The Ed25519 key relay tickets are signed with (base64 raw seed); the same on every coordinator."""
        with self.store.read() as conn:
            master = conn.execute(select(schema.registry.c.psk_master)).scalar_one()
        return keys.derive_relay_signing_key(bytes(master))

    def relay_public_key(self) -> str:
        """The public half relays are configured with (`wgmesh-coordinator relay-key`)."""
        return tickets.public_key_of(self.relay_signing_key())

    def relay_tls_key(self) -> bytes:
        """The embedded relay's TLS private key (PEM), made once per registry: every coordinator running
        `--relay` on it presents the same key, so the pin agents hold survives a failover."""
        with self.store.write(bump=False) as w:
            # Only fills an empty slot: of coordinators starting together, the first key written wins.
            w.conn.execute(
                update(schema.registry)
                .where(schema.registry.c.relay_tls_key.is_(None))
                .values(relay_tls_key=relay_identity.generate_key().decode("ascii"))
            )
            stored = w.conn.execute(select(schema.registry.c.relay_tls_key)).scalar_one()
        return str(stored).encode("ascii")

    def relay_grant(
        self, node_id: int, relays: Sequence[RelayInfo], now: datetime | None = None
    ) -> RelayGrant:
        """A fresh relay ticket for `node_id` (which must exist) and the relays it may use."""
        with self.store.read() as conn:
            if conn.execute(select(schema.nodes.c.id).where(schema.nodes.c.id == node_id)).first() is None:
                raise NotFoundError(f"node {node_id} does not exist", code="node_not_found")
            revoked = conn.execute(
                select(schema.relay_revocations.c.issued_before).where(
                    schema.relay_revocations.c.node_id == node_id
                )
            ).scalar()
        private = self.relay_signing_key()
        issued = (now or utcnow()).timestamp()
        if revoked is not None:
            # A replaced node: its old instance's tickets are revoked up to that whole second; the new
            # instance's must pass, even when asked within it (tickets allow a minute of clock skew).
            issued = max(issued, float(revoked + 1))
        # Named for exactly the relays announced with it: another relay refuses it (issue 16).
        ticket = tickets.issue_ticket(
            private, node_id, RELAY_TICKET_TTL, issued, relays=[r.id for r in relays]
        )
        claims, _, _ = tickets.decode_ticket(ticket)
        return RelayGrant(
            relays=list(relays),
            ticket=ticket,
            expires_at=datetime.fromtimestamp(claims.expires_at, tz=UTC),
            coordinator_key=tickets.public_key_of(private),
        )

    def relay_revocations(self, now: datetime | None = None) -> list[RevokedTicket]:
        """Deleted nodes whose relay tickets may not have expired yet, for relays to refuse them."""
        at = (now or utcnow()).timestamp()
        rev = schema.relay_revocations
        with self.store.read() as conn:
            rows = conn.execute(
                select(rev.c.node_id, rev.c.issued_before)
                .where(rev.c.expires_at > at)
                .order_by(rev.c.node_id)
            ).mappings()
            return [RevokedTicket(node_id=r["node_id"], issued_before=r["issued_before"]) for r in rows]

    def version(self, max_age: float = 0.0) -> int:
        """The registry version (`max_age`: as in `snapshot`)."""
        return self.store.version(max_age=max_age)

    # --- status -------------------------------------------------------------------------------

    def record_status(self, node_id: NodeId, report: StatusReport, public_ip: str | None) -> bool:
        """Store a node's report; returns True when it changed what peers see (version bumped)."""
        now = utcnow()
        with self.store.read() as conn:
            node = self._node_by_id(conn, node_id)
            overlay = _network(conn).overlay_cidr
        _check_endpoints(report.endpoints, overlay)
        if report.eth0_ip is not None:
            # eth0 is an endpoint candidate too (netmap.endpoint_candidates): the same rule holds.
            _check_endpoints([Endpoint(report.eth0_ip, node.listen_port)], overlay)
        # Only what reaches netmaps counts: the interface MTU the agent set (report.mtu) and its
        # counters are shown to admins but change nothing for peers, so they must not wake long-polls.
        changed = (
            node.endpoints != report.endpoints
            or node.eth0_ip != report.eth0_ip
            or node.public_ip != public_ip
            or node.max_mtu != report.max_mtu
            or node.tcp != report.tcp
        )
        with self.store.write(bump=changed) as w:
            w.conn.execute(
                update(schema.nodes)
                .where(schema.nodes.c.id == node_id)
                .values(
                    endpoints=[str(e) for e in report.endpoints],
                    eth0_ip=report.eth0_ip,
                    public_ip=public_ip,
                    max_mtu=report.max_mtu,
                    tcp_port=report.tcp.port if report.tcp is not None else None,
                    tcp_pin=report.tcp.pin if report.tcp is not None else None,
                    last_seen=now,
                )
            )
            body = report  # written as its JSON form (store._json_text), not copied into a dict first
            where = schema.status.c.node_id == node_id
            if (
                w.conn.execute(
                    update(schema.status).where(where).values(reported_at=now, report=body)
                ).rowcount
                == 0
            ):
                w.conn.execute(insert(schema.status).values(node_id=node_id, reported_at=now, report=body))
        self._note_version(node, report.agent_version)
        return changed

    def _note_version(self, node: Node, version: str | None) -> None:
        """Log once per node and version when its agent is older than supported (`versions.is_older`); the
        warning of `topology.warnings` stands as long as the report does."""
        if version is None or not versions.is_older(version):
            self._outdated.pop(node.id, None)  # an upgraded agent that goes back is logged again
            return
        if self._outdated.get(node.id) == version:
            return
        self._outdated[node.id] = version
        log.warning(
            "agent older than supported",
            extra=kv(node=node.name, node_id=node.id, version=version, minimum=versions.MIN_AGENT_VERSION),
        )

    def record_heartbeat(self, node_id: NodeId, public_ip: str | None) -> bool:
        """Note that a node is alive (its last report stands); returns True when its whole report is
        wanted: none is held, or the address it comes from changed (which peers see: a whole report
        writes it)."""
        # From the snapshot long-polls share (public_ip is in every version: a change of it bumps one).
        node = self.snapshot(VERSION_TRUST).by_id.get(node_id)
        if node is None:
            raise NotFoundError(f"node {node_id} does not exist", code="node_not_found")
        if node.public_ip != public_ip or not self._has_report(node):
            return True
        # last_seen only, with the other heartbeats of the second: no version bump, so no long-poll wakes.
        self.last_seen.note(node_id, utcnow())
        return False

    def _has_report(self, node: Node) -> bool:
        """Whether a report of this node (this instance of it: its key) is stored."""
        if (node.id, node.public_key) in self._reported:
            return True
        with self.store.read() as conn:
            found = conn.execute(
                select(schema.status.c.node_id).where(schema.status.c.node_id == node.id)
            ).first()
        if found is not None:
            self._reported.add((node.id, node.public_key))
        return found is not None

    def statuses(self) -> dict[NodeId, NodeStatus]:
        """The last report of every node that has reported."""
        with self.store.read() as conn:
            rows = conn.execute(
                select(schema.status, schema.nodes.c.name).join(
                    schema.nodes, schema.nodes.c.id == schema.status.c.node_id
                )
            ).mappings()
            return {NodeId(r["node_id"]): _node_status(r) for r in rows}

    def node_status(self, ref: str) -> NodeStatus | None:
        """The last report of one node, or None if it never reported."""
        with self.store.read() as conn:
            node_id = self._resolve(conn, ref)
            return self._statuses_of(conn, [node_id]).get(node_id)

    def _statuses_of(self, conn: Connection, ids: Sequence[NodeId]) -> dict[NodeId, NodeStatus]:
        """The last reports of these nodes (those that reported), read and parsed alone: at 1,000 nodes
        every report is a million peer entries."""
        st, n = schema.status, schema.nodes
        found: dict[NodeId, NodeStatus] = {}
        for start in range(0, len(ids), IN_CHUNK):
            rows = conn.execute(
                select(st, n.c.name)
                .join(n, n.c.id == st.c.node_id)
                .where(st.c.node_id.in_(ids[start : start + IN_CHUNK]))
            ).mappings()
            found.update((NodeId(r["node_id"]), _node_status(r)) for r in rows)
        return found

    # --- topology -----------------------------------------------------------------------------

    def topology(self) -> Topology:
        """Nodes, links and routes with warnings, for the dashboard and the CLI (wgmesh.topology)."""
        snap = self.snapshot()
        return build_topology(
            snap.network,
            version=snap.version,
            nodes=self.list_nodes(),
            routes=sorted(snap.routes, key=_route_sort_key),
            pair_overrides=snap.pair_p2p,
            statuses=self.statuses(),
            now=utcnow(),
            groups=snap.ha_groups,
        )

    def topology_node(self, ref: str) -> TopologyNode:
        """One node with its peers as in `topology`, from its own report and, for the peers it does not
        report on (it is a static peer, or just enrolled), theirs: not every report of the network."""
        snap = self.snapshot()
        nodes = self.list_nodes()  # last_seen and online, which the snapshot does not hold
        node = next((n for n in nodes if n.name == ref), None) or next(
            (n for n in nodes if str(n.id) == ref), None
        )
        if node is None:
            raise NotFoundError(f"no node named {ref!r}", code="unknown_node")
        with self.store.read() as conn:
            own = self._statuses_of(conn, [node.id]).get(node.id)
            entries = report_entries(node.id, own.report, nodes) if own is not None else {}
            missing = [o.id for o in nodes if o.id != node.id and o.public_key not in entries]
            theirs = self._statuses_of(conn, missing) if missing else {}
        reports: dict[NodeId, dict[str, PeerStatus]] = {node.id: entries}
        for other_id, st in theirs.items():
            found = report_entries(other_id, st.report, [node]).get(node.public_key)
            reports[other_id] = {node.public_key: found} if found is not None else {}
        return topology_node(snap.network, node, nodes, reports, own)

    # --- topology at scale: the summary and its pages (wgmesh.topology_summary) ----------------------

    def _link_tally(
        self, nodes: Sequence[Node], now: datetime
    ) -> tuple[int, dict[NodeId, ReportDigest], LinkTally]:
        """The links counted (with the digests they were counted from and a serial number), recounted when
        nodes come or go and at most every LINK_COUNT_TTL otherwise: a count is a pass over every report
        entry (~0.6 s at 1,000 full-mesh nodes), and links change state by minutes (HANDSHAKE_FRESH)."""
        ids = tuple(n.id for n in nodes)
        held = self._tally_held
        if held is not None and held[0] == ids and now - held[1] < LINK_COUNT_TTL:
            return held[2], held[3], held[4]
        digests = self.report_digests.current(nodes)
        tally = tally_links(ids, digests, now, online={n.id for n in nodes if n.online})
        serial = held[2] + 1 if held is not None else 1
        self._tally_held = (ids, now, serial, digests, tally)
        return serial, digests, tally

    def _scale_view(self) -> tuple[list[TopologyNodeRow], TopologySummary]:
        """The summary and every node's row, from the snapshot, the nodes and the link counts; the same
        answer again while none of them changed (a dashboard refresh asks for the summary and a page at once)."""
        snap = self.snapshot()
        nodes = self.list_nodes()
        serial, digests, tally = self._link_tally(nodes, utcnow())
        key = (snap.version, serial, tuple((n.online, n.last_seen) for n in nodes))
        held = self._scale_held
        if held is not None and held[0] == key:
            return held[1], held[2]
        rows = node_rows(nodes, tally, snap.routes, digests)
        summary = summarize(
            snap.network,
            version=snap.version,
            rows=rows,
            nodes=nodes,
            routes=snap.routes,
            ha_groups=len(snap.ha_groups),
            digests=digests,
            tally=tally,
        )
        self._scale_held = (key, rows, summary)
        return rows, summary

    def topology_summary(self) -> TopologySummary:
        """The topology in counts, with its groups by tag, site and problem."""
        return self._scale_view()[1]

    def topology_nodes(
        self,
        *,
        tag: str | None = None,
        site: str | None = None,
        problem: TopologyProblem | None = None,
        name: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> TopologyNodePage:
        """One page of the nodes matching the filter, sorted by name, with their links by state."""
        rows = filter_rows(self._scale_view()[0], tag=tag, site=site, problem=problem, name=name)
        return TopologyNodePage(
            total=len(rows), offset=offset, limit=limit, nodes=rows[offset : offset + limit]
        )

    def topology_links(
        self, ref: str, *, state: LinkState | None = None, offset: int = 0, limit: int = 100
    ) -> TopologyLinkPage:
        """One page of one node's links (O(n): only its pairs are joined), sorted by the other's name."""
        snap = self.snapshot()
        nodes = self.list_nodes()
        node = next((n for n in nodes if n.name == ref or str(n.id) == ref), None)
        if node is None:
            raise NotFoundError(f"node {ref!r} does not exist", code="unknown_node")
        digests = self.report_digests.current(nodes)
        now = utcnow()
        others = [o for o, st in link_states_of(node, nodes, digests, now) if state in (None, st)]
        links = node_links(
            snap.network,
            node,
            others[offset : offset + limit],
            overrides=snap.pair_p2p,
            digests=digests,
            now=now,
        )
        return TopologyLinkPage(node=node.name, total=len(others), offset=offset, limit=limit, links=links)
