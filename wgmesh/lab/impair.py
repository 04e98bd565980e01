"""The lab's switches for impaired underlays, as pure text: UDP blocked at a gateway, UDP throttled.

Blocking is an nftables table inside the gateway's namespace; throttling is tc (HTB) on both ends of the
gateway's underlay veth. Nothing here runs anything: `system` applies it, `switches` and `build` decide when.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from wgmesh import rates
from wgmesh.errors import ValidationError
from wgmesh.lab.layout import MAX_SITES, LabPlan, Site
from wgmesh.rates import format_rate

V = TypeVar("V")

# Inside a gateway namespace, which belongs to one lab, so the table needs no lab name in it.
UDP_TABLE = "wgmesh_lab_udp"
UDP_FAMILY = "inet"
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
) -> list[str]:
    """One short phrase per switch in force, for `status` and `up` (`ha_sites`: whose LAN has two gateways)."""
    ha = set(ha_sites)
    lines = [f"gw{i}: UDP blocked" for i in blocked]
    lines += [f"gw{i}: UDP throttled to {rate}" for i, rate in throttled.items()]
    lines += [f"gw{i}: p2p off" for i in p2p_off]
    lines += [f"gw{i}: underlay MTU {mtu}" for i, mtu in (underlay_mtu or {}).items()]
    for i, mtu in (lan_mtu or {}).items():
        gateways = f"gw{i}'s and gw{i}b's" if i in ha else f"gw{i}'s"
        lines.append(f"vm{i}: LAN MTU {mtu} (and {gateways} lan)")
    lines += [f"vm{i}: inbound ICMP unreachable dropped (security group)" for i in sg_drop_icmp]
    return lines
