"""The coordinator's database schema (SQLAlchemy Core); portable between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Connection

SCHEMA_VERSION = 14

Step = str | Callable[[Connection], None]
"""One migration step: portable SQL, or a callable on the connection (creating a table from its
definition below, so that a new database and an upgraded one hold the same table)."""


def _create_audit(conn: Connection) -> None:
    audit.create(conn)


def _create_relay_revocations(conn: Connection) -> None:
    relay_revocations.create(conn)


def _create_sessions(conn: Connection) -> None:
    sessions.create(conn)


def _site_without_default(conn: Connection) -> None:
    # The DEFAULT only let step 12 add a NOT NULL column to rows that exist; the registry writes every
    # node's site itself, so PostgreSQL drops it (SQLite cannot alter a column: it keeps an unused one).
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE nodes ALTER COLUMN site DROP DEFAULT")


# Statements that bring a database from the previous version to this one; portable SQL (SQLite and
# PostgreSQL both add a nullable column in place), applied in one transaction by Store.upgrade.
MIGRATIONS: dict[int, tuple[Step, ...]] = {
    2: (
        "ALTER TABLE nodes ADD COLUMN rate VARCHAR(16)",
        "ALTER TABLE pairs ADD COLUMN rate VARCHAR(16)",
    ),
    3: (
        "ALTER TABLE networks ADD COLUMN mtu INTEGER",
        # The default tunnel MTU the agents used before version 3 (a literal: what version 3 meant, even
        # if models.DEFAULT_MTU changes later). Written out, so every network row holds its MTU and no
        # reader has to know that NULL once meant 1420.
        "UPDATE networks SET mtu = 1420",
        "ALTER TABLE nodes ADD COLUMN mtu INTEGER",
        "ALTER TABLE nodes ADD COLUMN max_mtu INTEGER",
    ),
    4: (
        # Named, read-only and revocable admin tokens. Tokens from before version 4 get a name from
        # their id and the source "upgrade": whether init or WGMESH_ADMIN_TOKEN made them is not known.
        "ALTER TABLE admin_tokens ADD COLUMN name VARCHAR(63)",
        "ALTER TABLE admin_tokens ADD COLUMN read_only BOOLEAN",
        "ALTER TABLE admin_tokens ADD COLUMN source VARCHAR(8)",
        "ALTER TABLE admin_tokens ADD COLUMN revoked_at TIMESTAMP WITH TIME ZONE",
        "UPDATE admin_tokens SET name = 'admin-' || CAST(id AS VARCHAR(20)), read_only = FALSE, "
        "source = 'upgrade'",
        "CREATE UNIQUE INDEX admin_tokens_name ON admin_tokens (name)",
        _create_audit,
    ),
    # The embedded relay's TLS key (PEM), made when a coordinator first runs `--relay`.
    5: ("ALTER TABLE registry ADD COLUMN relay_tls_key TEXT",),
    # The coordinator's TLS identity (coordinator/identity.py): PEM key and certificate, and the staged
    # next ones a rotation announces. NULL until the first start makes one (an upgraded database).
    6: (
        "ALTER TABLE registry ADD COLUMN tls_key TEXT",
        "ALTER TABLE registry ADD COLUMN tls_cert TEXT",
        "ALTER TABLE registry ADD COLUMN tls_next_key TEXT",
        "ALTER TABLE registry ADD COLUMN tls_next_cert TEXT",
    ),
    # Route approval (wgmesh/route_approval.py): an admin's decision on each advertised prefix, the
    # prefixes an enrollment token allows (copied onto the nodes it enrolls) and the network's rule.
    # Routes from before version 7 were all routed: they stay so, approved by "upgrade".
    7: (
        "ALTER TABLE routes ADD COLUMN decision VARCHAR(8)",
        "ALTER TABLE routes ADD COLUMN decided_by VARCHAR(80)",
        "ALTER TABLE routes ADD COLUMN decision_reason VARCHAR(200)",
        "UPDATE routes SET decision = 'approved', decided_by = 'upgrade'",
        "ALTER TABLE tokens ADD COLUMN allow_subnets JSON",
        "UPDATE tokens SET allow_subnets = '[]'",
        "ALTER TABLE nodes ADD COLUMN allow_subnets JSON",
        "UPDATE nodes SET allow_subnets = '[]'",
        "ALTER TABLE networks ADD COLUMN auto_approve JSON",
        "UPDATE networks SET auto_approve = '[]'",
    ),
    # Deleted nodes' relay tickets, revoked until the last of them expires. Empty after the upgrade:
    # nodes deleted before it keep their tickets until these expire (a day), as before.
    8: (_create_relay_revocations,),
    # Node lifecycle: an admin's request that a node's agent rotate its key, and enrollment tokens that
    # replace a named node (a dead instance) instead of adding one.
    9: (
        "ALTER TABLE nodes ADD COLUMN rotate_requested_at TIMESTAMP WITH TIME ZONE",
        "ALTER TABLE tokens ADD COLUMN replaces VARCHAR(63)",
    ),
    # Dashboard sessions in the database, so that every coordinator of the registry serves a browser.
    # Empty after the upgrade: sessions were in the coordinator's memory, and its restart ended them.
    10: (_create_sessions,),
    # Enrollment safe to retry across coordinators: the node a token last enrolled, and when, so that the
    # same token, name and key within a few minutes get that node again (registry.enroll). NULL for the
    # tokens used before: their enrollments are long over.
    11: (
        "ALTER TABLE tokens ADD COLUMN enrolled_node INTEGER",
        "ALTER TABLE tokens ADD COLUMN enrolled_at TIMESTAMP WITH TIME ZONE",
    ),
    # Sites (issue 18): the site (VPC) a gateway serves; identical prefixes of one site's gateways form an
    # HA group. Every existing node is a site of its own, named after it, so no group forms by itself.
    12: (
        "ALTER TABLE nodes ADD COLUMN site VARCHAR(63) NOT NULL DEFAULT ''",
        "UPDATE nodes SET site = name",
        _site_without_default,
    ),
    # Aliases (issue 20): a VPC prefix published under another of its length (1:1 prefix translation at
    # its gateway), set by an admin, by the agent, or drawn from the network's alias pool on a conflict.
    13: (
        "ALTER TABLE routes ADD COLUMN alias VARCHAR(64)",
        "ALTER TABLE routes ADD COLUMN alias_by VARCHAR(8)",
        "ALTER TABLE networks ADD COLUMN alias_pool VARCHAR(64)",
    ),
    # Direct TCP between gateways (issue 21): the port and TLS key pin of the agent's listener, as its
    # reports give them. NULL until the agent reports one: peers then use the relay as before.
    14: (
        "ALTER TABLE nodes ADD COLUMN tcp_port INTEGER",
        "ALTER TABLE nodes ADD COLUMN tcp_pin VARCHAR(71)",
    ),
}

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# One row: the registry version every mutating transaction bumps first. Bumping first also takes the
# write lock (SQLite) or the row lock (PostgreSQL), which serialises writers across coordinators.
registry = Table(
    "registry",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    Column("psk_master", LargeBinary(32), nullable=False),
    # Since version 5: the private key (PEM) of the relay `--relay` embeds, shared by every coordinator
    # of the registry so that its pin survives failover; NULL until one first runs it.
    Column("relay_tls_key", Text),
    # Since version 6: the coordinator's TLS identity (PEM), secret like psk_master; see identity.py.
    Column("tls_key", Text),
    Column("tls_cert", Text),
    Column("tls_next_key", Text),
    Column("tls_next_cert", Text),
    CheckConstraint("id = 1", name="registry_single_row"),
)

networks = Table(
    "networks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(63), nullable=False, unique=True),
    Column("overlay_cidr", String(64), nullable=False),
    Column("p2p", String(8), nullable=False),
    Column("listen_port", Integer, nullable=False),
    # Since version 3; nullable as the migration adds it, but every row holds one (the migration writes
    # it, a new network is created with it), so readers never have to guess a default.
    Column("mtu", Integer),
    Column("auto_approve", JSON),  # since version 7: prefixes any node's routes are approved inside
    Column("alias_pool", String(64)),  # since version 13: where aliases for conflicting prefixes come from
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("public_key", String(44), nullable=False, unique=True),
    Column("overlay_ip", String(45), nullable=False, unique=True),
    Column("p2p", String(8), nullable=False),
    Column("tags", JSON, nullable=False),
    Column("listen_port", Integer, nullable=False),
    Column("endpoints", JSON, nullable=False),
    Column("eth0_ip", String(45)),
    Column("public_ip", String(45)),
    Column("last_seen", DateTime(timezone=True)),
    Column("static", Boolean, nullable=False),
    # Only for static peers, whose keys the coordinator generates so that it can export their config.
    Column("private_key", String(44)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("rate", String(16)),  # since version 2
    Column("mtu", Integer),  # since version 3: the admin's ceiling; NULL: the network's default
    Column("max_mtu", Integer),  # since version 3: what the agent reported its underlay carries
    # Since version 7: the prefixes the enrolling token allowed (route_approval); [] for static peers.
    Column("allow_subnets", JSON),
    # Since version 9: when an admin asked the node's agent to rotate its key; NULL once it has.
    Column("rotate_requested_at", DateTime(timezone=True)),
    # Since version 12: the site the node serves (its own name unless its agent names one, `--site`).
    Column("site", String(63), nullable=False),
    # Since version 14: the agent's direct TCP listener (models.DirectTcp); both NULL: none.
    Column("tcp_port", Integer),
    Column("tcp_pin", String(71)),
    sqlite_autoincrement=True,
)

routes = Table(
    "routes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", Integer, ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False),
    Column("prefix", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Since version 7: an admin's decision (approved, rejected; NULL: the rules decide), by whom, why.
    Column("decision", String(8)),
    Column("decided_by", String(80)),
    Column("decision_reason", String(200)),
    # Since version 13: the prefix the other sites reach this one at (NULL: itself), and who chose it
    # (agent, admin, pool).
    Column("alias", String(64)),
    Column("alias_by", String(8)),
    UniqueConstraint("node_id", "prefix", name="routes_node_prefix"),
    sqlite_autoincrement=True,
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("secret_hash", String(64), nullable=False),
    Column("reusable", Boolean, nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("uses", Integer, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("p2p", String(8)),
    Column("description", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("allow_subnets", JSON),  # since version 7: prefixes its nodes' routes are approved inside
    Column("replaces", String(63)),  # since version 9: the one node name it enrolls, replacing that node
    Column("enrolled_node", Integer),  # since version 11: the node it last enrolled (no foreign key: a
    Column("enrolled_at", DateTime(timezone=True)),  # deleted node leaves a stale id, which matches nothing)
    sqlite_autoincrement=True,
)

credentials = Table(
    "credentials",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", Integer, ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("credentials_node", "node_id"),
    sqlite_autoincrement=True,
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Since version 4; nullable as the migration adds them, but every row holds a value (it writes them).
    Column("name", String(63)),
    Column("read_only", Boolean),
    Column("source", String(8)),  # init, env (WGMESH_ADMIN_TOKEN), api, upgrade (from before version 4)
    Column("revoked_at", DateTime(timezone=True)),
    Index("admin_tokens_name", "name", unique=True),
    sqlite_autoincrement=True,
)

# Since version 4: one row per admin change. `detail` never holds a secret (wgmesh.coordinator.audit).
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(80), nullable=False),  # a token name, or session:<token name>
    Column("action", String(64), nullable=False),
    Column("target", String(200), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("client", String(64)),  # the client address, None when the server does not know it
    Index("audit_at", "at"),
    sqlite_autoincrement=True,
)

# Since version 7: one tombstone per deleted node, so relays refuse its tickets (wgmesh/relay/revocation.py).
# Unix seconds, as tickets carry them; no foreign key, as the node is gone.
relay_revocations = Table(
    "relay_revocations",
    metadata,
    Column("node_id", Integer, primary_key=True, autoincrement=False),
    Column("issued_before", BigInteger, nullable=False),  # tickets issued at or before this are revoked
    Column("expires_at", BigInteger, nullable=False),  # the last such ticket has expired: drop the row
)

# Since version 10: dashboard sessions (coordinator/sessions.py). Only the SHA-256 of the session id (the
# cookie): the CSRF token is derived from the id, the admin token is named by its row id. No foreign key:
# admin tokens are revoked, never deleted, and a revocation deletes their sessions itself.
sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("token_id", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("sessions_token", "token_id"),
    Index("sessions_expires", "expires_at"),
)

# Sparse: a row exists only for a pair with an override or a rotated preshared key.
pairs = Table(
    "pairs",
    metadata,
    Column("node_a", Integer, ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
    Column("node_b", Integer, ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
    Column("p2p", String(8)),
    Column("psk_generation", Integer, nullable=False),
    Column("rate", String(16)),  # since version 2
    CheckConstraint("node_a < node_b", name="pairs_ordered"),
)

status = Table(
    "status",
    metadata,
    Column("node_id", Integer, ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
    Column("reported_at", DateTime(timezone=True), nullable=False),
    Column("report", JSON, nullable=False),
)
