"""The agent's nftables table, as data: what it should hold, its `nft -f` script, and how to recognise it.

One table per WireGuard interface (`inet wgmesh_<if>`) holds every rule the agent needs, each kind in a
chain of its own at a fixed priority, so that later kinds (prefix translation) slot in without
reordering what is there:

| chain | hook, priority | holds |
|---|---|---|
| `mss` | forward, mangle (-150) | TCP MSS clamping of SYNs into and out of the tunnel, per peer group |
| `prerouting` | prerouting, dstnat (-100) | prefix translation in: a VPC served under an alias, its alias rewritten to its own prefix (host part kept) |
| `postrouting` | postrouting, srcnat (100) | masquerade of tunnel traffic leaving into the VPC (all of it with `--masquerade`; into this gateway's HA prefixes by default); prefix translation out: that VPC's addresses leaving into the tunnel rewritten to its alias |

MSS clamping: a gateway forwards a VPC's 1500- or 9001-byte packets into a smaller tunnel; its ICMP
"fragmentation needed" answer is dropped by the cloud's security group by default, so TCP stalls after
the handshake. Rewriting the MSS option of every SYN and SYN-ACK that crosses the tunnel makes both
ends send segments that fit: clamped to the smaller of this gateway's and the peer's tunnel MTU, in
both directions (a peer that does not clamp, a static one, is covered from this side alone).

Everything here is pure; `system/firewall.py` runs `nft` with it.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wgmesh import mtu as mtus
from wgmesh.agent.wgstate import DeviceSpec, span
from wgmesh.errors import BackendError
from wgmesh.models import NetMap

FAMILY = "inet"

CHAINS: dict[str, tuple[str, str, str]] = {
    # name: (type, hook, priority) — fixed, so every chain's place among the host's own is known.
    "mss": ("filter", "forward", "mangle"),
    "prerouting": ("nat", "prerouting", "dstnat"),
    "postrouting": ("nat", "postrouting", "srcnat"),
}

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_COMMENT = re.compile(r'^\s*comment "wgmesh ([0-9a-f]{16})"\s*$', re.MULTILINE)


def table_name(ifname: str) -> str:
    """The agent's table for `ifname`."""
    return f"wgmesh_{ifname}"


def check_ifname(ifname: str) -> None:
    """The name goes into nft's language: refuse anything that could need quoting."""
    if not _SAFE_NAME.fullmatch(ifname):
        raise BackendError(f"interface name {ifname!r} cannot be used in an nftables rule", code="nft")


@dataclass(frozen=True)
class MssGroup:
    """Peers whose path carries the same MTU: their prefixes, per family, collapsed and sorted."""

    mtu: int
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()


@dataclass(frozen=True, order=True)
class Translation:
    """A VPC prefix this gateway serves under an alias of the same length: `real` inside the VPC, `alias`
    to the rest of the mesh. Connection tracking carries the replies, and the ICMP errors about a
    connection (path MTU signals among them), back through the same mapping."""

    real: str
    alias: str

    def __post_init__(self) -> None:
        # Both go into nft's language: only canonical prefixes of one family and length get there.
        try:
            real, alias = ipaddress.ip_network(self.real), ipaddress.ip_network(self.alias)
        except ValueError as exc:
            raise BackendError(f"cannot translate {self.real} to {self.alias}: {exc}", code="nft") from exc
        if (real.version, real.prefixlen) != (alias.version, alias.prefixlen):
            raise BackendError(
                f"cannot translate {real} to {alias}: an alias is a prefix of the same family and length",
                code="nft",
            )
        if (str(real), str(alias)) != (self.real, self.alias):
            raise BackendError(f"cannot translate {self.real} to {self.alias}: not canonical", code="nft")

    @property
    def ip(self) -> str:
        """nft's keyword for the family: `ip` or `ip6`."""
        return "ip6" if ":" in self.real else "ip"


@dataclass(frozen=True)
class FirewallSpec:
    """Everything the agent's table should hold; empty: no table at all."""

    ifname: str
    masquerade: bool = False
    clamps: tuple[MssGroup, ...] = field(default=())
    masquerade_to: MssGroup | None = None
    """Prefixes whose tunnel traffic is masqueraded (an HA group's, agent/ha.py); its `mtu` is unused."""
    translations: tuple[Translation, ...] = ()
    """VPC prefixes this gateway serves under an alias (its netmap's own routes), kept sorted: the digest
    must not depend on the order they came in."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "translations", tuple(sorted(self.translations)))

    @property
    def empty(self) -> bool:
        return (
            not self.masquerade and not self.clamps and self.masquerade_to is None and not self.translations
        )


def desired_firewall(
    ifname: str,
    netmap: NetMap,
    device: DeviceSpec,
    own_mtu: int,
    *,
    masquerade: bool,
    mss_clamp: bool,
    ha_masquerade: bool = False,
) -> FirewallSpec:
    """The table for `netmap` on a tunnel of `own_mtu`, given the peers' allowed IPs in `device`.

    With `ha_masquerade`, traffic from the tunnel into a prefix of an HA group this gateway belongs to
    leaves with the gateway's address: the VPC's replies come back to whichever member forwarded it,
    without the cloud's route table knowing (the default when no `--on-primary` hook rewrites it)."""
    clamps: tuple[MssGroup, ...] = ()
    if mss_clamp:
        peer_mtu = {p.public_key: p.mtu for p in netmap.peers}
        by_mtu: dict[int, list[str]] = {}
        for key, peer in device.peers.items():
            path = mtus.path_mtu(own_mtu, peer_mtu.get(key, mtus.DEFAULT_MTU))
            by_mtu.setdefault(path, []).extend(peer.allowed_ips)
        clamps = tuple(_group(m, tuple(prefixes)) for m, prefixes in sorted(by_mtu.items()) if prefixes)
    translations = own_translations(netmap)
    # Traffic into an HA prefix is addressed to the VPC's own prefix once translated (dnat runs first).
    real_of = {t.alias: t.real for t in translations}
    own = tuple(
        real_of.get(str(g.prefix), str(g.prefix)) for g in netmap.ha_groups if netmap.node_id in g.members
    )
    masquerade_to = _group(0, own) if ha_masquerade and own and not masquerade else None
    return FirewallSpec(ifname, masquerade, clamps, masquerade_to, translations)


def own_translations(netmap: NetMap) -> tuple[Translation, ...]:
    """The 1:1 prefix translations this gateway runs: its routed prefixes that have an alias (an HA
    standby's too, so that it takes over with them in place)."""
    return tuple(
        Translation(str(r.prefix), str(r.alias))
        for r in netmap.routes
        if r.alias is not None and r.state in ("active", "standby")
    )


@functools.lru_cache(maxsize=16)
def _group(mtu: int, prefixes: tuple[str, ...]) -> MssGroup:
    # Cached: every apply asks again for the same few groups; and collapsed over integers, since
    # ipaddress.collapse_addresses over 2,000 prefixes (1,000 peers) took a tenth of an apply's budget.
    # Collapsed at all because an interval set refuses overlapping elements, and a covered prefix adds nothing.
    return MssGroup(mtu, collapse(prefixes, 4), collapse(prefixes, 6))


def collapse(prefixes: Iterable[str], version: int) -> tuple[str, ...]:
    """The prefixes of this IP version as the fewest prefixes covering the same addresses, in address order
    (what `ipaddress.collapse_addresses` gives): merged as integer ranges, each range cut into prefixes."""
    spans = sorted((first, last) for v, first, last in map(span, prefixes) if v == version)
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    address = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return tuple(
        str(net)
        for start, end in merged
        for net in ipaddress.summarize_address_range(address(start), address(end))
    )


def digest(spec: FirewallSpec) -> str:
    """A short fingerprint of the spec, kept in the table's comment to recognise it later."""
    return hashlib.sha256(_body(spec).encode()).hexdigest()[:16]


def script(spec: FirewallSpec) -> str:
    """An `nft -f` script that replaces the table in one transaction (never a moment without rules)."""
    check_ifname(spec.ifname)
    table = table_name(spec.ifname)
    # "add" then "delete" makes the delete safe when the table is absent; all of it is one transaction.
    head = f"add table {FAMILY} {table}\ndelete table {FAMILY} {table}\n"
    if spec.empty:
        return head
    return (
        head + f"table {FAMILY} {table} {{\n" + f'  comment "wgmesh {digest(spec)}"\n' + _body(spec) + "}\n"
    )


def _body(spec: FirewallSpec) -> str:
    ifname = spec.ifname
    lines: list[str] = []
    rules: dict[str, list[str]] = {name: [] for name in CHAINS}
    for group in spec.clamps:
        for family, prefixes, ip, kind, ipv6 in (
            ("4", group.ipv4, "ip", "ipv4_addr", False),
            ("6", group.ipv6, "ip6", "ipv6_addr", True),
        ):
            if not prefixes:
                continue
            name = f"mss{family}_{group.mtu}"
            lines.append(f"  set {name} {{\n    type {kind}; flags interval;\n")
            lines.append(f"    elements = {{ {', '.join(prefixes)} }}\n  }}\n")
            size = mtus.mss(group.mtu, ipv6)
            clamp = f"tcp flags & (syn | rst) == syn tcp option maxseg size > {size} tcp option maxseg size set {size}"
            rules["mss"].append(f'oifname "{ifname}" {ip} daddr @{name} {clamp}')
            rules["mss"].append(f'iifname "{ifname}" {ip} saddr @{name} {clamp}')
    if spec.masquerade:
        rules["postrouting"].append(f'iifname "{ifname}" oifname != "{ifname}" masquerade')
    if spec.masquerade_to is not None:
        for ip, prefixes in (("ip", spec.masquerade_to.ipv4), ("ip6", spec.masquerade_to.ipv6)):
            if prefixes:
                rules["postrouting"].append(
                    f'iifname "{ifname}" oifname != "{ifname}" {ip} daddr {{ {", ".join(prefixes)} }} masquerade'
                )
    for t in spec.translations:
        # Only the first packet of a connection meets these chains: its replies are un-translated by
        # connection tracking, whichever way the connection was opened.
        rules["prerouting"].append(
            f'iifname "{ifname}" {t.ip} daddr {t.alias} dnat {t.ip} prefix to {t.real}'
        )
        rules["postrouting"].append(
            f'oifname "{ifname}" {t.ip} saddr {t.real} snat {t.ip} prefix to {t.alias}'
        )
    for name, (kind, hook, priority) in CHAINS.items():
        if not rules[name]:
            continue
        lines.append(f"  chain {name} {{\n    type {kind} hook {hook} priority {priority}; policy accept;\n")
        lines.extend(f"    {rule}\n" for rule in rules[name])
        lines.append("  }\n")
    return "".join(lines)


@dataclass(frozen=True)
class Shape:
    """What is checked of a table: its comment (the spec's fingerprint), each chain's hook and
    priority, rules per chain, elements per set. A rule edited in place keeps its count; the rest
    of what drifts in practice (a flush, a reload that drops the table, a set emptied) shows."""

    comment: str | None
    chains: Mapping[str, tuple[str, str, int]]
    rules: Mapping[str, int]
    sets: Mapping[str, frozenset[str]]


# nft's JSON gives a chain's priority as a number: the named priorities used in CHAINS, in the inet family.
_PRIORITY = {"mangle": -150, "srcnat": 100, "dstnat": -100, "filter": 0}


def expected_shape(spec: FirewallSpec) -> Shape:
    rules: dict[str, int] = {}
    sets: dict[str, frozenset[str]] = {}
    for group in spec.clamps:
        for family, prefixes in (("4", group.ipv4), ("6", group.ipv6)):
            if prefixes:
                sets[f"mss{family}_{group.mtu}"] = frozenset(prefixes)
                rules["mss"] = rules.get("mss", 0) + 2
    if spec.masquerade:
        rules["postrouting"] = 1
    if spec.masquerade_to is not None:
        extra = bool(spec.masquerade_to.ipv4) + bool(spec.masquerade_to.ipv6)
        rules["postrouting"] = rules.get("postrouting", 0) + extra
    if spec.translations:
        rules["prerouting"] = len(spec.translations)
        rules["postrouting"] = rules.get("postrouting", 0) + len(spec.translations)
    chains = {
        name: (kind, hook, _PRIORITY[priority])
        for name, (kind, hook, priority) in CHAINS.items()
        if name in rules
    }
    return Shape(digest(spec), chains, rules, sets)


def observed_shape(text: str, listing: Mapping[str, Any]) -> Shape:
    """The shape of a table from `nft list table` (for the comment) and `nft -j list table`."""
    found = _COMMENT.search(text)
    chains: dict[str, tuple[str, str, int]] = {}
    rules: dict[str, int] = {}
    sets: dict[str, frozenset[str]] = {}
    for item in listing.get("nftables", []):
        if "chain" in item:
            chain = item["chain"]
            chains[chain.get("name", "")] = (
                chain.get("type", ""),
                chain.get("hook", ""),
                chain.get("prio", 0),
            )
        elif "rule" in item:
            name = item["rule"].get("chain", "")
            rules[name] = rules.get(name, 0) + 1
        elif "set" in item:
            elements = item["set"].get("elem", [])
            sets[item["set"]["name"]] = frozenset(_element(e) for e in elements)
    return Shape(found.group(1) if found else None, chains, rules, sets)


def _element(value: Any) -> str:
    """A set element as nft's JSON gives it (an address, or a prefix object) → canonical prefix text;
    a form we never write (a range, say) becomes its JSON, so the table reads as different."""
    try:
        if isinstance(value, dict) and "prefix" in value:
            prefix = value["prefix"]
            return str(ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}", strict=False))
        if isinstance(value, dict) and "elem" in value:
            return _element(value["elem"]["val"])
        return str(ipaddress.ip_network(str(value)))
    except (ValueError, KeyError, TypeError):
        return json.dumps(value, sort_keys=True)
