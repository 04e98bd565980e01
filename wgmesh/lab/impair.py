"""The lab's switches for impaired underlays, as pure text: UDP blocked at a gateway, UDP throttled, TCP
blocked between two gateways.

Blocking is an nftables table inside the gateway's namespace (for TCP, inside both gateways' namespaces);
throttling is tc (HTB) on both ends of the gateway's underlay veth. Nothing here runs anything: `system`
applies it, `switches` and `build` decide when.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TypeVar

from wgmesh import rates
from wgmesh.errors import ValidationError
from wgmesh.lab.layout import MAX_SITES, LabPlan, Site
from wgmesh.rates import format_rate

V = TypeVar("V")
Pair = tuple[int, int]
"""Two distinct sites, the lower first: the gateways `--block-tcp-between` keeps TCP from."""

# Inside a gateway namespace, which belongs to one lab, so the table needs no lab name in it.
UDP_TABLE = "wgmesh_lab_udp"
UDP_FAMILY = "inet"
# TCP blocked between gateways: its own table, so the UDP switch and this one never replace each other.
TCP_TABLE = "wgmesh_lab_tcp"
TCP_FAMILY = "inet"
# The set in TCP_TABLE holding the underlay addresses this gateway exchanges no TCP with.
TCP_PEERS = "peers"
# The gateway's underlay link inside its namespace (the root-side end is Site.uplink).
GATEWAY_UPLINK = "eth0"
# A veth carries about 17 Gbit/s here; a throttle above that would throttle nothing.
MAX_RATE = 10 * 10**9
# The class that takes everything but UDP: far above what a veth carries, so it never shapes TCP.
UNLIMITED = "100gbit"
# The UDP class's queue, in packets: a few milliseconds at 10 Mbit/s, so excess UDP is dropped almost
# at once (as a provider's policer would) instead of piling up as latency.
UDP_QUEUE = 8


@dataclass(frozen=True)
class TcCommand:
    """One `tc` command, run in `netns` (None: the root namespace)."""

    netns: str | None
    args: tuple[str, ...]


def parse_sites(text: str, what: str = "site list") -> list[int]:
    """`1,3` as sorted, distinct site indexes; ValidationError naming `what` otherwise."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item.isdigit() for item in items):
        raise ValidationError(
            f"{what} {text!r} must be site numbers separated by commas, e.g. 1,3", code="invalid_sites"
        )
    indexes = sorted({int(item) for item in items})
    for index in indexes:
        if not 1 <= index <= MAX_SITES:
            raise ValidationError(
                f"{what} {text!r}: site {index} is not between 1 and {MAX_SITES}", code="invalid_sites"
            )
    return indexes


def parse_pair(text: str, what: str = "site pair") -> Pair:
    """`1,2` (or `2,1`) as the pair (1, 2); ValidationError naming `what` when it is not two distinct sites."""
    items = [item.strip() for item in text.split(",")]
    if len(items) != 2 or any(not item.isdigit() for item in items):
        raise ValidationError(
            f"{what} {text!r} must be two site numbers separated by a comma, e.g. 1,2", code="invalid_pair"
        )
    a, b = (int(item) for item in items)
    return check_pair((a, b), what, text)


def check_pair(pair: Sequence[int], what: str, shown: str | None = None) -> Pair:
    """`pair` as two distinct sites, lower first, or ValidationError naming `what` (and `shown`, the pair as
    given; by default `I,J`)."""
    if len(pair) != 2:
        raise ValidationError(f"{what} {list(pair)}: a pair is two sites", code="invalid_pair")
    a, b = pair
    shown = f"{a},{b}" if shown is None else shown
    for index in (a, b):
        if not 1 <= index <= MAX_SITES:
            raise ValidationError(
                f"{what} {shown!r}: site {index} is not between 1 and {MAX_SITES}", code="invalid_pair"
            )
    if a == b:
        raise ValidationError(f"{what} {shown!r}: a pair is two different sites", code="invalid_pair")
    return (a, b) if a < b else (b, a)


def parse_pairs(items: Iterable[str], what: str = "--block-tcp-between") -> list[Pair]:
    """`I,J` items, one pair each (the switch is repeated for more), as sorted, distinct pairs."""
    return sorted({parse_pair(item, what) for item in items})


def check_pairs(pairs: Iterable[Sequence[int]], what: str) -> list[Pair]:
    """Pairs given from Python (`[(2, 1), (1, 3)]`) checked, as sorted, distinct pairs, lower site first."""
    return sorted({check_pair(pair, what) for pair in pairs})


def parse_rate(text: str) -> str:
    """A tc rate such as `10mbit`, normalised (`1.5mbit` -> `1500kbit`); ValidationError when not one."""
    return format_rate(rates.parse_rate(text, maximum=MAX_RATE))


def parse_site_values(
    items: Iterable[str],
    switch: str,
    example: str,
    parse_one: Callable[[str], V],
    *,
    value: str,
    code: str,
) -> dict[int, V]:
    """`I=VALUE` items, each possibly a comma list (`1=a,2=b`), as {site: parse_one(VALUE)}; the last
    one wins. `switch` (`--throttle-udp`) and `example` (`2=10mbit`) name the switch in errors, `value`
    (`RATE`) the VALUE part, and `code` is the error code of an item that is not `I=VALUE`."""
    found: dict[int, V] = {}
    for item in items:
        for part in item.split(","):
            index, sep, text = part.partition("=")
            if not sep or not text.strip():
                raise ValidationError(f"{switch} {part!r} must be SITE={value}, e.g. {example}", code=code)
            (site,) = parse_sites(index, f"{switch} site")
            found[site] = parse_one(text)
    return dict(sorted(found.items()))


def parse_throttles(items: Iterable[str]) -> dict[int, str]:
    """`I=RATE` items, each possibly a comma list (`1=10mbit,2=5mbit`), as {site: normalised rate}."""
    return parse_site_values(
        items, "--throttle-udp", "2=10mbit", parse_rate, value="RATE", code="invalid_throttle"
    )


def check_sites(plan: LabPlan, indexes: Iterable[int], what: str) -> None:
    """ValidationError when an index is not a site of the plan."""
    for index in indexes:
        if not 1 <= index <= len(plan.sites):
            raise ValidationError(
                f"{what}: unknown site {index} (lab {plan.name} has sites 1..{len(plan.sites)})",
                code="unknown_site",
            )


def table_script(table: str, body: str) -> str:
    """An `nft -f` script that (re)creates `table` ("FAMILY NAME") holding `body` in one transaction.

    `add` then `delete` then the definition: atomic whether or not the table exists, so applying it
    twice is harmless and never leaves a gap.
    """
    return f"add table {table}\ndelete table {table}\ntable {table} {{\n{body}}}\n"


def block_udp_script() -> str:
    """The nftables script that (re)creates the table dropping all UDP on a gateway's underlay link."""
    dev = f'"{GATEWAY_UPLINK}"'
    return table_script(
        f"{UDP_FAMILY} {UDP_TABLE}",
        "  chain input {\n"
        "    type filter hook input priority -10; policy accept;\n"
        f"    iifname {dev} meta l4proto udp counter drop\n"
        "  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority -10; policy accept;\n"
        f"    iifname {dev} meta l4proto udp counter drop\n"
        f"    oifname {dev} meta l4proto udp counter drop\n"
        "  }\n"
        "  chain output {\n"
        "    type filter hook output priority -10; policy accept;\n"
        f"    oifname {dev} meta l4proto udp counter drop\n"
        "  }\n",
    )


def unblock_udp_script() -> str:
    """The nftables script that removes the blocking table, whether or not it exists."""
    table = f"{UDP_FAMILY} {UDP_TABLE}"
    return f"add table {table}\ndelete table {table}\n"


def block_tcp_script(peers: Iterable[IPv4Address]) -> str:
    """The nftables script that (re)creates a gateway's table dropping all TCP to and from `peers` (the
    underlay addresses of the gateways it is blocked from), both ways; everything else passes."""
    elements = ", ".join(str(address) for address in sorted(set(peers)))
    if not elements:
        raise ValueError("no peer addresses: the table would block nothing (unblock_tcp_script removes it)")
    return table_script(
        f"{TCP_FAMILY} {TCP_TABLE}",
        f"  set {TCP_PEERS} {{\n"
        "    type ipv4_addr;\n"
        f"    elements = {{ {elements} }}\n"
        "  }\n"
        "  chain input {\n"
        "    type filter hook input priority -10; policy accept;\n"
        f"    ip saddr @{TCP_PEERS} meta l4proto tcp counter drop\n"
        "  }\n"
        "  chain output {\n"
        "    type filter hook output priority -10; policy accept;\n"
        f"    ip daddr @{TCP_PEERS} meta l4proto tcp counter drop\n"
        "  }\n",
    )


def unblock_tcp_script() -> str:
    """The nftables script that removes a gateway's TCP table, whether or not it exists."""
    table = f"{TCP_FAMILY} {TCP_TABLE}"
    return f"add table {table}\ndelete table {table}\n"


def tcp_peers(pairs: Iterable[Pair], index: int) -> list[int]:
    """The sites whose gateway site `index`'s gateway exchanges no TCP with, given the pairs in force."""
    return sorted({b if a == index else a for a, b in pairs if index in (a, b)})


def tcp_scripts(plan: LabPlan, pairs: Iterable[Pair], indexes: Iterable[int]) -> dict[str, str]:
    """For each site of `indexes`, the script that makes its gateway's namespace hold exactly the TCP blocks
    of `pairs` (all the pairs in force): its table with every peer's underlay address, or no table at all.

    By namespace. The table is the gateway's whole TCP block, rebuilt from the pairs each time, so
    blocking or unblocking one pair never disturbs the others.
    """
    held = list(pairs)
    scripts = {}
    for index in sorted(set(indexes)):
        peers = [plan.site(peer).underlay_ip for peer in tcp_peers(held, index)]
        scripts[plan.site(index).gw_ns] = block_tcp_script(peers) if peers else unblock_tcp_script()
    return scripts


def _throttle_device(netns: str | None, dev: str, rate: str) -> list[TcCommand]:
    def tc(line: str) -> TcCommand:
        # Device names and rates never contain spaces (layout.py and parse_rate make them).
        return TcCommand(netns, tuple(line.split()))

    # HTB derives quantum from the rate, and at UNLIMITED that is far above the kernel's cap (it would
    # log a warning per class), so it is given.
    return [
        tc(f"qdisc add dev {dev} root handle 1: htb default 10"),
        tc(f"class add dev {dev} parent 1: classid 1:10 htb rate {UNLIMITED} quantum 60000"),
        tc(f"class add dev {dev} parent 1: classid 1:20 htb rate {rate} ceil {rate} quantum 1514"),
        tc(f"qdisc add dev {dev} parent 1:20 handle 20: pfifo limit {UDP_QUEUE}"),
        # IPv4 protocol 17 only: the underlay carries no IPv6 (lab links get no IPv6 address).
        tc(f"filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip protocol 17 0xff flowid 1:20"),
    ]


def throttle_commands(site: Site, rate: str) -> list[TcCommand]:
    """tc commands limiting UDP to `rate` both ways on the site's underlay link (run on a clean link)."""
    # Egress is the only place a qdisc shapes, so each direction is shaped where it leaves a veth end:
    # gateway -> underlay on eth0 in the namespace, underlay -> gateway on the root-side end.
    return _throttle_device(site.gw_ns, GATEWAY_UPLINK, rate) + _throttle_device(None, site.uplink, rate)


def unthrottle_commands(site: Site) -> list[TcCommand]:
    """tc commands that remove the throttle's root qdiscs (each fails harmlessly when there is none)."""
    return [
        TcCommand(site.gw_ns, ("qdisc", "del", "dev", GATEWAY_UPLINK, "root")),
        TcCommand(None, ("qdisc", "del", "dev", site.uplink, "root")),
    ]


def describe(
    blocked: Iterable[int],
    throttled: Mapping[int, str],
    p2p_off: Iterable[int],
    *,
    lan_mtu: Mapping[int, int] | None = None,
    underlay_mtu: Mapping[int, int] | None = None,
    sg_drop_icmp: Iterable[int] = (),
    ha_sites: Iterable[int] = (),
    blocked_tcp: Iterable[Sequence[int]] = (),
) -> list[str]:
    """One short phrase per switch in force, for `status` and `up` (`ha_sites`: whose LAN has two gateways)."""
    ha = set(ha_sites)
    lines = [f"gw{i}: UDP blocked" for i in blocked]
    lines += [f"gw{a} <-> gw{b}: TCP blocked between their underlay addresses" for a, b in blocked_tcp]
    lines += [f"gw{i}: UDP throttled to {rate}" for i, rate in throttled.items()]
    lines += [f"gw{i}: p2p off" for i in p2p_off]
    lines += [f"gw{i}: underlay MTU {mtu}" for i, mtu in (underlay_mtu or {}).items()]
    for i, mtu in (lan_mtu or {}).items():
        gateways = f"gw{i}'s and gw{i}b's" if i in ha else f"gw{i}'s"
        lines.append(f"vm{i}: LAN MTU {mtu} (and {gateways} lan)")
    lines += [f"vm{i}: inbound ICMP unreachable dropped (security group)" for i in sg_drop_icmp]
    return lines
