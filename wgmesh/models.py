"""Pydantic types shared by every wgmesh process: the registry, netmaps and the API payloads."""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_right
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from wgmesh import errors, ipam, keys, pins, printable, rates, values, versions
from wgmesh.values import (
    AliasSource,
    FailoverCode,
    Liveness,
    NodeId,
    P2PPolicy,
    PathKind,
    RefusalCode,
    RouteState,
)

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_TAG = re.compile(r"^[a-z0-9]([a-z0-9_.:-]{0,62})$")
_CANONICAL_KEY = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")
"""Exactly the canonical base64 of 32 bytes (what keys.decode_key accepts): 43 characters whose last
carries 4 bits, then one `=`; anything else goes through decode_key for its precise refusal."""


def check_name(value: str) -> str:
    """Accept a hostname label (lowercase, 1-63 characters) or raise ValueError."""
    if not _LABEL.fullmatch(value):
        raise ValueError(
            "name must be a hostname label: 1-63 characters of a-z, 0-9 and '-', "
            "not starting or ending with '-'"
        )
    return value


def _check_key(value: str) -> str:
    if _CANONICAL_KEY.fullmatch(value):
        return value  # the common case, by a regular expression in C: reports carry a key per peer
    try:
        keys.decode_key(value)
    except errors.ValidationError as exc:
        raise ValueError(exc.message) from exc
    return value


def _check_tag(value: str) -> str:
    if not _TAG.fullmatch(value):
        raise ValueError("tag must be 1-63 characters of a-z, 0-9, '_', '.', ':', '-'")
    return value


def _parse_prefix(value: object) -> values.Prefix:
    """A prefix on the wire: `ADDRESS/LENGTH`, host bits clear (`ipam.parse_cidr` says why not)."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    try:
        return ipam.parse_cidr(value)
    except errors.ValidationError as exc:
        raise ValueError(exc.message) from exc


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address") from exc


def _parse_endpoint(value: object) -> values.Endpoint:
    """An endpoint on the wire: `ADDRESS:PORT` with an IP address (IPv6 as `[ADDRESS]:PORT`)."""
    if isinstance(value, values.Endpoint):
        endpoint = value
    elif isinstance(value, str):
        try:
            endpoint = values.Endpoint.parse(value)
        except errors.ValidationError as exc:
            raise ValueError(exc.message) from exc
    else:
        raise PydanticCustomError("string_type", "Input should be a valid string")
    if endpoint.ip is None:  # peers and WireGuard need an address: nothing resolves names for them
        raise ValueError(f"endpoint {value!r} must be ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)")
    return endpoint


Name = Annotated[str, AfterValidator(check_name)]
WgKey = Annotated[str, AfterValidator(_check_key)]
Tag = Annotated[str, AfterValidator(_check_tag)]
IpAddr = Annotated[str, AfterValidator(_check_ip)]
EndpointField = Annotated[
    values.Endpoint,
    PlainValidator(_parse_endpoint, json_schema_input_type=str),
    PlainSerializer(str, return_type=str),
]
"""An `Endpoint` parsed once where a payload enters and written back as the same `HOST:PORT` string."""
PrefixField = Annotated[
    values.Prefix,
    PlainValidator(_parse_prefix, json_schema_input_type=str),
    PlainSerializer(str, return_type=str),
]
"""A `Prefix` parsed once where a payload enters and written back as its canonical `ADDRESS/LENGTH`."""


def _check_rate(value: str) -> str:
    try:
        return rates.normalize_rate(value)
    except errors.ValidationError as exc:
        raise ValueError(exc.message) from exc


Rate = Annotated[str, AfterValidator(_check_rate)]
"""A bandwidth limit as tc writes it (`20mbit`), stored in its canonical spelling."""

FROM_CLIENT = {"from_client": True}
"""The validation context of a request body (operations.read_body): text a client sends is checked there."""


def _check_printable(value: str, info: ValidationInfo) -> str:
    # Only where a request enters: a value stored by an older version must still read back (and is escaped
    # wherever it is shown, wgmesh.printable), or one bad report would break every topology answer.
    context = info.context
    if isinstance(context, dict) and context.get("from_client") and not printable.is_printable(value):
        raise ValueError("must be printable text: no control characters (ESC, CR, LF, …)")
    return value


Printable = Annotated[str, AfterValidator(_check_printable)]
"""Free text a client sends (a reason, a relay id, an interface name, a description): refused at the API
when it holds a character that is not printable; the length is bounded where it is used (`max_length`)."""
Port = Annotated[int, Field(ge=1, le=65535)]

DEFAULT_MTU = 1420
"""WireGuard's usual tunnel MTU: a 1500-byte underlay minus the largest (IPv6) encapsulation overhead."""
MIN_MTU = 1280  # IPv6's minimum link MTU: below it the tunnel could not carry IPv6 at all
MAX_MTU = 9000  # enough for the jumbo frames cloud VPCs offer
Mtu = Annotated[int, Field(ge=MIN_MTU, le=MAX_MTU)]
"""A tunnel MTU an admin sets: the network's default or a node's ceiling."""
UnderlayMtu = Annotated[int, Field(ge=576, le=65535)]
"""An MTU an agent reports (what its underlay carries, what it set): 576, the datagram every IPv4 host
must accept, up to the largest an interface can have. Wider than Mtu: the underlay is what it is."""


class Model(BaseModel):
    """Base of every payload: unknown fields are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class Answer(Model):
    """What the coordinator sends agents: fields a newer coordinator adds are ignored, not errors.

    An agent must keep following netmaps while the coordinator is upgraded before it: a new field (the
    MTU in schema 3) would otherwise make it refuse every netmap until it is upgraded too.
    """

    model_config = ConfigDict(extra="ignore")


# --- registry -------------------------------------------------------------------------------------


class Network(Model):
    """The overlay network every node belongs to."""

    name: Name = "default"
    overlay_cidr: PrefixField = ipaddress.IPv4Network("100.96.0.0/16")
    p2p: P2PPolicy = "auto"
    listen_port: Port = 51820
    mtu: Mtu = Field(DEFAULT_MTU, description="Tunnel MTU of every node without its own `mtu`")
    auto_approve: list[PrefixField] = Field(
        default_factory=list,
        max_length=256,
        description="Advertised prefixes inside one of these are approved (private, CGNAT, ULA space only)",
    )
    alias_pool: PrefixField | None = Field(
        None,
        description="Where a prefix that conflicts with an earlier one of another site gets its alias from "
        "(null: conflicts stay until an admin or the agent gives one)",
    )


class NetworkPatch(Model):
    """Changes an admin may make to the network at run time."""

    p2p: P2PPolicy | None = None
    listen_port: Port | None = None
    mtu: Mtu | None = Field(None, description="Default tunnel MTU, 1280-9000")
    auto_approve: list[PrefixField] | None = Field(
        None, max_length=256, description="The network's auto-approve rule, replaced whole ([] clears it)"
    )
    alias_pool: PrefixField | None = Field(
        None, description="The network's alias pool; conflicting prefixes get aliases from it at once"
    )
    clear_alias_pool: bool = Field(False, description="Remove the alias pool (aliases given stay)")


def _check_pin(value: str) -> str:
    try:
        return str(pins.Pin.parse(value))  # one spelling (lowercase hex) on the wire
    except errors.ValidationError as exc:
        raise ValueError(exc.message) from exc


PinText = Annotated[str, AfterValidator(_check_pin)]


class DirectTcp(Answer):
    """A node's agent accepting its peers' WireGuard datagrams over TCP (the `tcp-direct` path), on `port`
    of each of the node's endpoint hosts, presenting the TLS key of `pin`."""

    port: Port
    pin: PinText = Field(description="sha256:<hex> of the listener's TLS public key; peers refuse any other")


class Node(Model):
    """A member of the mesh, as the registry knows it."""

    id: NodeId
    name: Name
    public_key: WgKey
    overlay_ip: IpAddr
    site: Name = Field(
        description="The site (VPC) the node serves: identical prefixes of one site's gateways form an HA "
        "group; a node that names none is a site of its own, named after it"
    )
    subnets: list[PrefixField] = Field(
        default_factory=list, description="Advertised subnets, in the order given"
    )
    p2p: P2PPolicy = "auto"
    tags: list[Tag] = Field(default_factory=list)
    listen_port: Port = 51820
    endpoints: list[EndpointField] = Field(default_factory=list)
    tcp: DirectTcp | None = Field(
        None, description="The agent's direct TCP listener, as it reported it; null: none (or not yet known)"
    )
    eth0_ip: IpAddr | None = None
    public_ip: IpAddr | None = None
    last_seen: datetime | None = None
    online: bool = False
    static: bool = Field(False, description="Keys generated by the coordinator (device without an agent)")
    rate: Rate | None = Field(None, description="Egress limit of the node's WireGuard interface")
    mtu: Mtu | None = Field(
        None, description="The admin's ceiling on the node's tunnel MTU; null: the network's default"
    )
    max_mtu: int | None = Field(
        None, description="The largest tunnel MTU the node's underlay carries, as its agent reported it"
    )
    created_at: datetime
    rotate_requested_at: datetime | None = Field(
        None, description="When an admin asked its agent for a new key; null once the agent has rotated"
    )

    @model_validator(mode="before")
    @classmethod
    def _own_site(cls, data: Any) -> Any:
        """A node given without a site is a site of its own (the rule of the registry's rows too)."""
        if isinstance(data, dict) and data.get("site") is None and "name" in data:
            return {**data, "site": data["name"]}
        return data


class Route(Answer):
    """A subnet advertised by a gateway, with the verdict of route validation."""

    # The coordinator's held snapshots share one Route among versions (registry._classify): never changed.
    model_config = ConfigDict(extra="ignore", frozen=True)

    prefix: PrefixField
    gateway: Name
    gateway_id: NodeId
    state: RouteState
    reason: str = ""
    conflicting_with: str | None = Field(
        None, description="The route this one collides with or stands by for, as 'PREFIX@GATEWAY'"
    )
    decided_by: str | None = Field(
        None,
        description="Who approved or rejected it: an admin token's name, 'token' (the node's enrollment "
        "token), 'network' (the network's auto-approve rule) or 'upgrade' (routed before approvals existed); "
        "null while pending",
    )
    alias: PrefixField | None = Field(
        None,
        description="Where the other sites reach this prefix (1:1 prefix translation at its gateway); "
        "null: at the prefix itself",
    )
    alias_by: AliasSource | None = Field(
        None, description="Who gave the alias: the gateway's agent, an admin, or the network's alias pool"
    )

    @property
    def published(self) -> values.Prefix:
        """The prefix the other sites route to this gateway: its alias, else the prefix itself."""
        return self.alias if self.alias is not None else self.prefix


class RouteDecision(Model):
    """An admin's approval or rejection of one prefix a node advertises."""

    prefix: PrefixField
    reason: Printable = Field("", max_length=200)


class RouteAlias(Model):
    """An admin's alias for one prefix a node advertises: where the other sites reach it."""

    prefix: PrefixField
    alias: PrefixField | None = Field(
        description="A prefix of the same family and length; null: back to the prefix itself (or to an "
        "alias from the network's pool while the prefix is in conflict)"
    )


class PairPolicy(Model):
    """A node pair's overrides: its P2P policy and a bandwidth limit each way."""

    a: Name
    b: Name
    p2p: P2PPolicy | None = None
    rate: Rate | None = Field(None, description="Limit of the traffic each node sends the other")


# --- netmap ---------------------------------------------------------------------------------------


class PeerConfig(Answer):
    """One peer as a node should configure it."""

    node_id: NodeId
    name: Name
    public_key: WgKey
    overlay_ip: IpAddr
    allowed_ips: list[PrefixField]
    endpoints: list[EndpointField] = Field(
        default_factory=list, description="Endpoint candidates, best first"
    )
    p2p: P2PPolicy = Field("auto", description="Effective policy for this pair")
    tcp: DirectTcp | None = Field(
        None,
        description="Where the peer's agent takes datagrams over TCP when UDP between the two fails (the "
        "port on each endpoint's host, its TLS key pinned); null: the relay is the only other path",
    )
    psk: WgKey | None = None
    eth0_ip: IpAddr | None = None
    public_ip: IpAddr | None = None
    rate: Rate | None = Field(None, description="Limit of what this node sends the peer (pair override)")
    static: bool = Field(False, description="A device without an agent: direct UDP only, no relay or probes")
    # A default, so that a netmap from a coordinator without MTUs still reads as before.
    mtu: int = Field(
        DEFAULT_MTU,
        description="The peer's effective tunnel MTU: clamp TCP MSS to the smaller of this and your own",
    )


class HaGroup(Answer):
    """Gateways of one site advertising the same approved prefix: who may carry it, in order.

    Each agent picks the member it sends the prefix to from its own probes (agent/ha.py): the primary
    while it answers, else the first standby that does. `allowed_ips` holds the prefix on the primary,
    so an agent that knows no HA groups keeps routing it there."""

    prefix: PrefixField
    site: Name
    members: list[NodeId] = Field(min_length=2, description="The primary first, then the standbys in order")


class NetMap(Answer):
    """Everything one node needs to configure its interface and routes."""

    version: int
    node_id: NodeId
    name: Name
    overlay_ip: IpAddr
    overlay_cidr: PrefixField
    listen_port: Port
    p2p: P2PPolicy = Field(description="The node's own effective policy (network and node)")
    peers: list[PeerConfig]
    routes: list[Route] = Field(default_factory=list, description="The verdict on this node's own subnets")
    ha_groups: list[HaGroup] = Field(
        default_factory=list, description="Every HA group of the network, this node's own included"
    )
    rate: Rate | None = Field(None, description="Egress limit of this node's WireGuard interface")
    # A default, so that a cached netmap or one from a coordinator without MTUs still reads as before.
    mtu: int = Field(
        DEFAULT_MTU,
        description="This node's effective tunnel MTU: its ceiling (else the network's), at most what its "
        "underlay carries",
    )
    coordinator_next_pin: str | None = Field(
        None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="The pin of the key the coordinator will switch to (a staged rotation); agents accept "
        "a coordinator presenting it only once it was announced here",
    )
    # Defaults, so that a cached netmap from before key rotation still reads.
    public_key: WgKey | None = Field(
        None,
        description="The node's own key as the coordinator holds it (an agent finishes a rotation by it)",
    )
    rotate_key: bool = Field(False, description="An admin asked this node's agent to rotate its key")
    tcp_direct: bool = Field(
        False,
        description="The coordinator takes agents' direct TCP listeners (`StatusReport.tcp`) and the "
        "`tcp-direct` path in reports; an agent sends neither to a coordinator that does not say so",
    )


class NetMapChange(Answer):
    """A node's netmap as the change from the one it holds (`since`), or whole (`since` null).

    Sent by `GET /api/v1/netmap/changes`: at 1,000 gateways one change touches one peer of each netmap,
    and sending every node its 999 unchanged peers again is most of what a coordinator would do."""

    version: int
    since: int | None = Field(
        None,
        description="The version the change applies to; null: `netmap` is whole (the coordinator no longer "
        "holds the version asked about, or something every peer depends on changed)",
    )
    netmap: NetMap = Field(
        description="The netmap at `version`; with `since` set, `peers` holds only the peers added or changed"
    )
    removed: list[NodeId] = Field(default_factory=list, description="Peers gone since `since`")


_RELAY_URL = re.compile(r"^(tcp|tls)://[A-Za-z0-9.:\[\]-]{1,253}:[0-9]{1,5}$")


def _check_relay_url(value: str) -> str:
    if not _RELAY_URL.fullmatch(value):
        raise ValueError(f"relay {value!r} must be tcp://HOST:PORT or tls://HOST:PORT")
    try:
        values.Endpoint.parse(value.partition("://")[2])
    except errors.ValidationError as exc:
        raise ValueError(f"relay {value!r}: {exc.message}") from exc
    return value


RelayUrl = Annotated[str, AfterValidator(_check_relay_url)]


class RelayInfo(Answer):
    """A relay agents may use: where it listens, whether it speaks TLS (`tls://`), and which key it holds."""

    id: Printable = Field(
        max_length=64, description="The relay's id (a ticket audience); its host:port by default"
    )
    url: RelayUrl
    pin: PinText | None = Field(
        None,
        description="sha256:<hex> of the relay's TLS public key; agents refuse a relay presenting another. "
        "Without it a tls:// relay is verified by the CA store",
    )

    @model_validator(mode="after")
    def _pin_needs_tls(self) -> RelayInfo:
        if self.pin is not None and not self.url.startswith("tls://"):
            raise ValueError(f"relay {self.url!r} has a pin but no TLS: a pin needs tls://")
        return self


class RevokedTicket(Answer):
    """Relay tickets of a deleted node: those issued at or before `issued_before` no longer pass."""

    node_id: int = Field(ge=0, le=0xFFFF_FFFF)
    issued_before: int = Field(ge=0, description="Unix seconds")


class RevocationList(Answer):
    """What a relay pulls from the coordinator: every deleted node whose tickets may still be unexpired."""

    revoked: list[RevokedTicket]


class RelayGrant(Answer):
    """What a node needs to use the relays: where they are and a ticket the coordinator signed."""

    relays: list[RelayInfo]
    ticket: str = Field(description="Relay ticket (bearer secret: never log it)")
    expires_at: datetime
    coordinator_key: str = Field(description="The coordinator's Ed25519 ticket key, base64 (public)")


# --- enrollment -----------------------------------------------------------------------------------


class EnrollRequest(Model):
    """What an agent sends to join: its public key, never its private one."""

    token: str = Field(min_length=1, max_length=512)
    name: Name
    public_key: WgKey
    listen_port: Port = 51820
    subnets: list[PrefixField] = Field(default_factory=list, max_length=1024)
    endpoints: list[EndpointField] = Field(default_factory=list, max_length=64)
    max_mtu: UnderlayMtu | None = Field(
        None, description="The largest tunnel MTU the node's underlay carries; null: unknown"
    )
    site: Name | None = Field(None, description="The site (VPC) the gateway serves; null: a site of its own")


class EnrollResponse(Answer):
    """The answer to an enrollment; the credential is shown this once."""

    node_id: NodeId
    credential: str
    netmap: NetMap


class KeyRotation(Model):
    """A node's new WireGuard public key (its agent made the pair and keeps the private half)."""

    public_key: WgKey


class KeyRotated(Answer):
    """The answer to a key rotation: a new credential (shown this once; the old one works until this one
    is first used) and the netmap with the new key."""

    credential: str
    netmap: NetMap


# --- status ---------------------------------------------------------------------------------------


class PeerStatus(Model):
    """What a node observes about one of its peers."""

    public_key: WgKey
    rx_bytes: int = Field(0, ge=0)
    tx_bytes: int = Field(0, ge=0)
    last_handshake: datetime | None = None
    endpoint: Printable | None = Field(None, max_length=64)
    path: PathKind | None = None
    relay: Printable | None = Field(None, max_length=128)
    rtt_ms: float | None = Field(None, ge=0)
    reason: Printable | None = Field(None, max_length=256)
    health: Liveness | None = Field(
        None, description="Whether the peer answers the agent's probes; null: an older agent"
    )


class HaStatus(Model):
    """One HA group as one agent handles it: the member it sends the prefix to, and its last move."""

    prefix: PrefixField
    holder: Name | None = Field(
        None,
        description="The member this agent sends the prefix to (itself: it carries the prefix); null: none yet",
    )
    code: FailoverCode
    reason: Printable = Field("", max_length=256)
    changed_at: datetime | None = Field(None, description="When the agent last moved the prefix; null: never")
    moved_from: Name | None = Field(None, description="The member the last move took the prefix from")


class ShadowedRoute(Model):
    """A remote route the agent did not install because it overlaps a locally connected subnet."""

    prefix: PrefixField
    gateway: Name | None = None
    interface: Printable = Field(max_length=32)
    local_prefix: PrefixField | None = None


class RefusedRoute(Model):
    """A remote prefix the agent refused to route or put in WireGuard's allowed IPs (agent/route_guard.py)."""

    prefix: PrefixField
    gateway: Name | None = None
    code: RefusalCode
    address: IpAddr | None = Field(None, description="The protected underlay address the prefix covers")

    @property
    def reason(self) -> str:
        """The refusal in words, for status screens and warnings."""
        what = {
            "coordinator": "the coordinator's address",
            "relay": "a relay's address",
            "next_hop": "the underlay next hop",
            "peer_endpoint": "the endpoint of a peer reached directly",
        }
        if self.code == "too_wide":
            return "wider than the agent's bound (--min-prefix-length, --allow-wide-routes)"
        return f"covers {what[self.code]} {self.address}"


RangeId = Annotated[int, Field(ge=1, le=2**31 - 1)]
"""A node id in a range of `NominalPeers` (the database's ids are 32-bit)."""


class NominalPeers(Model):
    """The peers a report leaves out because nothing about them needs saying (agent/reporting.py,
    `condense`): on a direct path, answering probes, with a handshake fresh when the report was made.
    Listed by node id as ranges; ids in a range that are not the agent's peers (deleted nodes, its own)
    are not meant. Their counters are summed, their handshakes given by the oldest."""

    ranges: list[tuple[RangeId, RangeId]] = Field(
        default_factory=list, max_length=10000, description="[first, last] node ids, inclusive, ascending"
    )
    count: int = Field(0, ge=0, le=1_000_000, description="How many peers the ranges hold")
    oldest_handshake: datetime | None = Field(None, description="The oldest of their handshakes")
    rx_bytes: int = Field(0, ge=0, description="Their received bytes, summed")
    tx_bytes: int = Field(0, ge=0, description="Their sent bytes, summed")

    @model_validator(mode="after")
    def _ascending(self) -> NominalPeers:
        last = 0
        for first, end in self.ranges:
            if first > end or first <= last:
                raise ValueError("ranges must be [first, last] pairs, ascending and apart")
            last = end
        return self

    def covers(self, node_id: int) -> bool:
        """Whether `node_id` is in one of the ranges."""
        return ranges_cover(self.ranges, node_id)


def ranges_cover(ranges: Sequence[tuple[int, int]], node_id: int) -> bool:
    """Whether `node_id` lies in one of `ranges` (inclusive, ascending, apart: `NominalPeers.ranges`)."""
    i = bisect_right(ranges, (node_id, 1 << 62)) - 1
    return i >= 0 and ranges[i][0] <= node_id <= ranges[i][1]


class StatusReport(Model):
    """The agent's periodic report."""

    endpoints: list[EndpointField] = Field(default_factory=list, max_length=64)
    tcp: DirectTcp | None = Field(
        None, description="The agent's direct TCP listener (the `tcp-direct` path); null: it runs none"
    )
    eth0_ip: IpAddr | None = None
    netmap_version: int | None = None
    peers: list[PeerStatus] = Field(
        default_factory=list,
        max_length=10000,
        description="Every peer WireGuard knows, or, with `nominal` set, only those not nominal",
    )
    nominal: NominalPeers | None = Field(
        None, description="The peers left out of `peers` as nominal (agents of more than 50 peers)"
    )
    shadowed: list[ShadowedRoute] = Field(default_factory=list, max_length=10000)
    refused: list[RefusedRoute] = Field(
        default_factory=list, max_length=10000, description="Netmap routes the agent refused to install"
    )
    metrics: EndpointField | None = Field(
        None, description="ADDRESS:PORT of the agent's Prometheus /metrics listener; null: off"
    )
    mtu: UnderlayMtu | None = Field(None, description="The MTU the agent set on its WireGuard interface")
    max_mtu: UnderlayMtu | None = Field(
        None, description="The largest tunnel MTU the node's underlay carries; null: unknown"
    )
    coordinator: str | None = Field(
        None,
        max_length=2048,
        description="The coordinator URL the agent follows (it may have several); null: an older agent",
    )
    ha: list[HaStatus] = Field(
        default_factory=list, max_length=10000, description="Each HA group, as this agent handles it"
    )
    agent_version: Printable | None = Field(
        None,
        max_length=versions.MAX_LENGTH,
        description="The wgmesh version the agent runs (`wgmesh.__version__`); null: unknown. Agents name it in their User-Agent (wgmesh-agent/VERSION), which the coordinator copies here",
    )


class Heartbeat(Model):
    """An agent saying it is alive, and that its report is the one it last sent but for its counters,
    handshake times and RTTs (agent/reporting.py); `POST /api/v1/node/heartbeat`."""

    netmap_version: int | None = None


class HeartbeatAck(Answer):
    """The answer to a heartbeat."""

    version: int
    report_wanted: bool = Field(
        description="Send the whole report now: the coordinator holds none from this node, or the address "
        "it sees the node come from changed"
    )


class NodeStatus(Model):
    """The last status report of a node, with when it arrived."""

    node: Name
    reported_at: datetime
    report: StatusReport


# --- admin ----------------------------------------------------------------------------------------


class TokenCreate(Model):
    """Parameters of a new enrollment token."""

    reusable: bool = False
    expires_in: int | None = Field(86400, ge=1, le=10 * 365 * 86400, description="Seconds; null: never")
    tags: list[Tag] = Field(default_factory=list)
    p2p: P2PPolicy | None = None
    description: Printable = Field("", max_length=200)
    allow_subnets: list[PrefixField] = Field(
        default_factory=list,
        max_length=256,
        description="Routes its nodes advertise inside one of these are approved (private, CGNAT, ULA only)",
    )
    replaces: Name | None = Field(
        None,
        description="The token enrolls only this node name, replacing the node of that name (a dead "
        "instance): the node keeps its id, overlay IP and routes, and its old credential dies at once",
    )

    @model_validator(mode="after")
    def _one_replacement(self) -> TokenCreate:
        # A reusable replacing token would be a lasting "take over this node": each use ends the
        # instance that runs.
        if self.replaces is not None and self.reusable:
            raise ValueError("a token that replaces a node enrolls once: it cannot be reusable")
        return self


class TokenInfo(Model):
    """An enrollment token as listed; the secret is never shown again."""

    id: int
    reusable: bool
    expires_at: datetime | None
    revoked: bool
    uses: int
    tags: list[Tag]
    p2p: P2PPolicy | None
    description: str
    created_at: datetime
    allow_subnets: list[PrefixField] = Field(default_factory=list)
    replaces: str | None = None


class TokenCreated(TokenInfo):
    """A freshly created token, with its secret shown this once."""

    token: str


class AdminTokenCreate(Model):
    """A new named admin token; a read-only one sees everything and changes nothing."""

    name: Name
    read_only: bool = False


class AdminTokenInfo(Model):
    """An admin token as listed; the secret is never shown again."""

    name: str
    read_only: bool
    source: Literal["init", "env", "api", "upgrade"] = Field(
        description="init, env (WGMESH_ADMIN_TOKEN), api, or upgrade (made before schema version 4)"
    )
    created_at: datetime
    revoked_at: datetime | None


class AdminTokenCreated(AdminTokenInfo):
    """A freshly created admin token, with its secret shown this once."""

    token: str


class AdminTokenList(Model):
    """Every admin token, revoked ones included, oldest first."""

    admin_tokens: list[AdminTokenInfo]


class AuditEntry(Model):
    """One admin change: who (a token name, or session:<token name>), what, when, from where."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any] = Field(description="what the request asked for, without any secret")
    client: str | None


class AuditList(Model):
    """Audit entries, oldest first."""

    entries: list[AuditEntry]


class NodeCreate(Model):
    """A static peer created by an admin (a device that cannot run the agent)."""

    name: Name
    generate_keys: bool = False
    public_key: WgKey | None = None
    listen_port: Port = 51820
    subnets: list[PrefixField] = Field(default_factory=list, max_length=1024)
    endpoints: list[EndpointField] = Field(default_factory=list, max_length=64)
    p2p: P2PPolicy = "auto"
    tags: list[Tag] = Field(default_factory=list)


class NodePatch(Model):
    """Changes an admin may make to a node; omitted fields stay as they are."""

    p2p: P2PPolicy | None = None
    subnets: list[PrefixField] | None = Field(None, max_length=1024)
    tags: list[Tag] | None = None
    rate: Rate | None = Field(None, description="Egress limit, e.g. 50mbit; null removes it")
    mtu: Mtu | None = Field(None, description="Ceiling on the tunnel MTU, 1280-9000; null: the network's")


class AliasStatement(Model):
    """A gateway's own alias for one of its subnets (`wgmesh-agent --advertise PREFIX=ALIAS`)."""

    prefix: PrefixField
    alias: PrefixField


class SubnetsUpdate(Model):
    """A gateway's statement of what it serves: its full list of advertised subnets, its site, and the
    aliases it names for some of them."""

    subnets: list[PrefixField] = Field(max_length=1024)
    site: Name | None = Field(None, description="The site (VPC) the gateway serves; null: a site of its own")
    aliases: list[AliasStatement] = Field(
        default_factory=list,
        max_length=1024,
        description="Where the other sites reach some of `subnets`; an alias an admin set stays, one "
        "the agent named before and names no more goes",
    )


class RouteList(Model):
    """All routes with their verdicts, sorted by prefix."""

    routes: list[Route]


class NodeList(Model):
    """All nodes, sorted by name."""

    nodes: list[Node]


class TokenList(Model):
    """All enrollment tokens, newest first."""

    tokens: list[TokenInfo]


class PairList(Model):
    """All per-pair overrides."""

    pairs: list[PairPolicy]


class StatusList(Model):
    """The last status report of every node that has reported, sorted by node name."""

    statuses: list[NodeStatus]


class WgQuickInterface(Model):
    """The [Interface] section of a static peer's wg-quick file."""

    private_key: WgKey
    address: list[PrefixField] = Field(description="The overlay address as a host prefix (/32 or /128)")
    listen_port: Port
    mtu: int = Field(
        DEFAULT_MTU, description="The tunnel MTU the gateways clamp this peer's TCP to: set it on the device"
    )


class WgQuickPeer(Model):
    """One [Peer] section of a static peer's wg-quick file."""

    name: Name
    public_key: WgKey
    preshared_key: WgKey | None = None
    allowed_ips: list[PrefixField]
    endpoint: EndpointField | None = Field(None, description="The peer's best endpoint candidate, if any")
    persistent_keepalive: int | None = Field(None, ge=1, le=65535, description="Seconds")


class WgQuickConfig(Model):
    """What `wgmesh export` writes for a static peer; it holds the private key (admin only)."""

    node: Name
    interface: WgQuickInterface
    peers: list[WgQuickPeer]


class Link(Model):
    """One peer pair as seen from both ends, for the topology view (wgmesh.topology decides each field)."""

    a: Name
    b: Name
    p2p: P2PPolicy = Field(description="The pair's effective policy (network, both nodes, pair override)")
    path: PathKind | Literal["down", "unknown"] = Field(
        description="direct/tcp-direct/relay: a fresh handshake; down: reported, none fresh; unknown: nobody "
        "reported"
    )
    rtt_ms: float | None = None
    last_handshake: datetime | None = None
    rx_bytes: int = 0
    tx_bytes: int = 0


class PeerView(Model):
    """One peer as one node sees it (null where nobody reported it).

    The agent serves its own view on its unix socket (`LocalStatus`); the coordinator joins the status
    reports into the same shape for every node (`TopologyNode.peers`), and the CLI prints either.
    """

    name: str
    overlay_ip: IpAddr
    eth0_ip: IpAddr | None = None
    public_ip: IpAddr | None = None
    path: PathKind | None = None
    endpoint: str | None = None
    relay: str | None = None
    rtt_ms: float | None = None
    rx_bytes: int | None = None
    tx_bytes: int | None = None
    last_handshake: datetime | None = None
    reason: str | None = None
    health: Liveness | None = None


class TopologyNode(Node):
    """A node with what the status reports say about it, joined by wgmesh.topology."""

    effective_p2p: P2PPolicy = Field(description="The node's own effective policy (network and node)")
    interface_mtu: int | None = Field(
        None, description="The MTU the node's agent set on its WireGuard interface, from its last report"
    )
    coordinator: str | None = Field(
        None, description="The coordinator URL the node's agent follows, from its last report"
    )
    agent_version: str | None = Field(
        None,
        description="The wgmesh version the node's agent runs, from its last report; null: no report, or a "
        "report stored before 0.2.0",
    )
    peers: list[PeerView] = Field(
        default_factory=list, description="Every other node as this one sees it, sorted by name"
    )


class RouteShadow(Model):
    """A node that does not install an active route: it overlaps a subnet connected to that node."""

    node: Name
    interface: Printable = Field(max_length=32)
    local_prefix: PrefixField | None = None


class TopologyRoute(Route):
    """A route with its verdict and the nodes that report not installing it."""

    shadowed_by: list[RouteShadow] = Field(
        default_factory=list, description="Nodes that do not install this active route (empty: none)"
    )


class HealthCounts(Model):
    """How many other agents' last reports see a node answering their probes, silent, or not yet known."""

    up: int = 0
    down: int = 0
    unknown: int = 0


class TopologyHaMember(Model):
    """One gateway of an HA group, with what the other agents report of it (wgmesh.topology)."""

    node: Name
    node_id: NodeId
    role: Literal["primary", "standby"]
    online: bool = Field(description="Whether the coordinator heard from its agent recently")
    health: HealthCounts = Field(description="The other agents' verdicts on it (`PeerStatus.health`)")
    carried_by: list[Name] = Field(
        default_factory=list,
        description="The agents that send the group's prefix to this member (`StatusReport.ha[].holder`)",
    )


class HaFailover(Model):
    """The newest move of an HA group's prefix any agent reported (`HaStatus.changed_at`)."""

    at: datetime
    reported_by: Name = Field(description="The agent that moved the prefix")
    code: FailoverCode
    holder: Name | None = Field(None, description="The member it sends the prefix to since")
    moved_from: Name | None = Field(None, description="The member it took the prefix from")
    reason: str = ""


class TopologyHaGroup(Model):
    """An HA group (`HaGroup`) with its members' health, who carries the prefix to whom, the last failover."""

    prefix: PrefixField
    site: Name
    members: list[TopologyHaMember] = Field(description="The primary first, then the standbys in order")
    last_failover: HaFailover | None = Field(None, description="null: no agent reported a move")


class Topology(Model):
    """Nodes, links and routes in one document: what the dashboard and `wgmesh status` draw."""

    network: Network
    version: int
    nodes: list[TopologyNode]
    links: list[Link]
    routes: list[TopologyRoute]
    warnings: list[str]
    ha_groups: list[TopologyHaGroup] = Field(
        default_factory=list, description="Every HA group of the network, sorted by prefix"
    )


class SessionLogin(Model):
    """The dashboard's login: the admin token, exchanged for a session cookie."""

    token: str = Field(min_length=1, max_length=512)


class SessionInfo(Model):
    """A dashboard session: the CSRF token to send as `X-CSRF-Token` on every change, and its expiry."""

    csrf_token: str
    expires_at: datetime


class Health(Model):
    """Liveness answer: 200 `ok`, or 503 `degraded` while the database is unavailable (a load balancer
    takes the coordinator out; it still answers long-polls from memory)."""

    status: Literal["ok", "degraded"]
    version: int = Field(description="The registry version (without the database: the one held in memory)")
    database: Literal["ok", "unavailable"] = "ok"


class ErrorBody(Model):
    """The body of every error answer."""

    code: str
    message: str


class ErrorResponse(Model):
    """`{"error": {"code": ..., "message": ...}}`."""

    error: ErrorBody


# --- agent-local status ---------------------------------------------------------------------------


class LocalRelay(Model):
    """One of the agent's relay connections, as `wgmesh-agent status` shows it."""

    id: str
    url: str
    up: bool
    rtt_ms: float | None = None
    home: bool = Field(False, description="The relay this agent sends relayed datagrams through")
    error: str | None = None


class LocalStatus(Model):
    """What `wgmesh-agent status` reads from the agent's unix socket; works while the coordinator is down."""

    name: str
    node_id: NodeId | None
    overlay_ip: IpAddr | None
    eth0_ip: IpAddr | None
    p2p: P2PPolicy
    subnets: list[PrefixField]
    interface: str
    coordinator: str
    coordinator_reachable: bool
    netmap_version: int | None
    peers: list[PeerView]
    shadowed: list[ShadowedRoute]
    refused: list[RefusedRoute] = Field(default_factory=list)
    mtu: int | None = None
    mss_clamp: bool = True
    relays: list[LocalRelay] = Field(default_factory=list)
    site: str | None = None
    ha: list[HaStatus] = Field(default_factory=list)
    tcp: DirectTcp | None = Field(None, description="The agent's direct TCP listener; null: none")


# --- topology at scale: the summary and its pages (wgmesh.topology_summary) --------------------------

TopologyProblem = Literal["offline", "links_down", "relayed", "conflicts"]
"""What a node can be listed for in the summary's problem groups."""

LinkState = Literal["direct", "tcp-direct", "relay", "down", "unknown"]


class LinkCounts(Model):
    """Links by state (Link.path): direct/tcp-direct/relay with a fresh handshake, down, unknown (nobody
    reported)."""

    direct: int = 0
    tcp_direct: int = Field(0, description="Links whose path is `tcp-direct`")
    relay: int = 0
    down: int = 0
    unknown: int = 0


class NodeCounts(Model):
    total: int = 0
    online: int = 0
    offline: int = 0


class TopologyGroup(Model):
    """Nodes sharing a tag value or a site, with how many of them have each problem."""

    kind: Literal["tag", "site"]
    key: str = Field(
        description="The tag's key (`region` of `region:eu-west-1`; `tag` without one), or `site`"
    )
    value: str = Field(description="The whole tag, or the site's name")
    nodes: NodeCounts
    problems: dict[TopologyProblem, int] = Field(description="How many of its nodes have each problem")
    query: str = Field(description="The query of GET /api/v1/topology/nodes that lists its nodes")


class ProblemGroup(Model):
    """One kind of problem: how many there are (links, routes or nodes) and on how many nodes."""

    problem: TopologyProblem
    count: int = Field(description="Links down, relayed links, conflicting routes, or offline nodes")
    nodes: int = Field(description="Nodes with this problem")
    query: str = Field(description="The query of GET /api/v1/topology/nodes that lists those nodes")


class TopologySummary(Model):
    """The topology in counts, built in one pass over the status reports (no list of links)."""

    network: Network
    version: int
    view: Literal["full", "summary"] = Field(
        description="How the dashboard and `wgmesh status` show this network: `full` draws every node and "
        "link (/api/v1/topology), `summary` shows these counts with drill-down (the pages)"
    )
    nodes: NodeCounts
    links: LinkCounts
    routes: dict[RouteState, int]
    ha_groups: int
    warnings: dict[str, int] = Field(description="Warnings (/api/v1/topology's) by kind")
    problems: list[ProblemGroup]
    tags: list[TopologyGroup] = Field(description="One group per tag value, sorted by key then value")
    sites: list[TopologyGroup] = Field(
        description="Sites of more than one node (a node naming no site is a site of its own)"
    )


class TopologyNodeRow(Model):
    """One node of a page: what it is, and its links by state."""

    id: NodeId
    name: Name
    site: Name
    tags: list[Tag]
    overlay_ip: IpAddr
    subnets: list[PrefixField]
    online: bool
    static: bool
    last_seen: datetime | None
    links: LinkCounts
    problems: list[TopologyProblem]
    agent_version: str | None = Field(
        None, description="The wgmesh version the node's agent runs, from its last report (null: unknown)"
    )


class TopologyNodePage(Model):
    total: int = Field(description="Nodes matching the filter, in all pages")
    offset: int
    limit: int
    nodes: list[TopologyNodeRow]


class TopologyLinkPage(Model):
    node: Name
    total: int = Field(description="Links of the node matching the filter, in all pages")
    offset: int
    limit: int
    links: list[Link] = Field(description="Sorted by the other node's name; `a` is always the node")
