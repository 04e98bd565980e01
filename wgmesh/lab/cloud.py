"""The lab's switches that make a site look like a cloud VPC, as pure text (issue 13).

- LAN MTU: the veth pair between the gateway (`lan`) and the VPC host (`eth0`), e.g. 9001 as in an AWS
  VPC, so the VPC host sends jumbo packets toward its gateway.
- Underlay MTU: both ends of the gateway's underlay veth (`eth0` in the namespace, `LAB-gI` on the
  bridge), e.g. 1460 as in GCP's default VPC.
- Security group: an nftables table in the VPC host's namespace that drops inbound ICMP "destination
  unreachable" (and ICMPv6 "destination unreachable" and "packet too big"), as a cloud security group
  does unless told otherwise, so path MTU discovery toward the VPC host is a black hole.

Nothing here runs anything: `system` applies it, `switches` and `build` decide when.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wgmesh.errors import ValidationError
from wgmesh.lab.impair import GATEWAY_UPLINK, parse_site_values, table_script
from wgmesh.lab.layout import IpCommand, Site

# What a lab link has when no switch says otherwise (a veth's default); not the tunnel's MTU
# (models.DEFAULT_MTU).
LINK_MTU = 1500
# The gateway's LAN-side link and the VPC host's only link (plan.site_commands names them).
GATEWAY_LAN = "lan"
HOST_LINK = "eth0"
# Inside a VPC host namespace, which belongs to one lab, so the table needs no lab name in it.
SG_TABLE = "wgmesh_lab_sg"
SG_FAMILY = "inet"


@dataclass(frozen=True)
class MtuRange:
    """The MTUs one switch accepts, and how its errors name it."""

    switch: str
    what: str
    low: int
    high: int
    example: str


# 576 is the smallest datagram every IPv4 host must take; 9216 the largest jumbo frame switches carry
# (AWS's 9001 fits).
LAN_MTU = MtuRange("--lan-mtu", "LAN MTU", 576, 9216, "1=9001")
# The underlay carries the tunnel, which may be IPv6 on a real one: IPv6's minimum link MTU is the floor.
UNDERLAY_MTU = MtuRange("--underlay-mtu", "underlay MTU", 1280, 9216, "2=1460")


def parse_mtu(text: str, limits: MtuRange) -> int:
    """A whole number of bytes within `limits`; ValidationError naming the switch otherwise."""
    value = text.strip()
    if not value.isdigit() or not limits.low <= int(value) <= limits.high:
        raise ValidationError(
            f"{limits.what} {text!r} must be a whole number between {limits.low} and {limits.high}",
            code="invalid_mtu",
        )
    return int(value)


def check_mtu(mtu: int, limits: MtuRange) -> int:
    """`mtu` if within `limits` (the Python API's check; the CLI parses text with parse_mtu)."""
    if not limits.low <= mtu <= limits.high:
        raise ValidationError(
            f"{limits.switch}: {limits.what} {mtu} is not between {limits.low} and {limits.high}",
            code="invalid_mtu",
        )
    return mtu


def parse_mtus(items: Iterable[str], limits: MtuRange) -> dict[int, int]:
    """`I=MTU` items, each possibly a comma list (`1=9001,2=9001`), as {site: MTU}; the last one wins."""
    return parse_site_values(
        items,
        limits.switch,
        limits.example,
        lambda text: parse_mtu(text, limits),
        value="MTU",
        code="invalid_mtu",
    )


def with_mtu(recorded: Mapping[int, int], index: int, mtu: int) -> dict[int, int]:
    """The recorded MTUs with site `index` at `mtu`; the default is no switch, so it is not recorded."""
    changed = {i: m for i, m in recorded.items() if i != index}
    if mtu != LINK_MTU:
        changed[index] = mtu
    return dict(sorted(changed.items()))


def lan_mtu_commands(site: Site, mtu: int) -> list[IpCommand]:
    """`ip` commands giving both ends of the site's LAN veth this MTU."""
    # Both ends: the VPC host must send packets this large, and the gateway must take them in (a veth
    # drops what is larger than the receiving end's MTU).
    # On an HA site the host's `eth0` is a bridge: its ports (one per gateway) first, so that the bridge,
    # which follows its ports, can take the MTU after them.
    commands = [
        IpCommand(g.netns, ("link", "set", "dev", GATEWAY_LAN, "mtu", str(mtu))) for g in site.gateways
    ]
    if site.ha:
        commands += [
            IpCommand(site.vm_ns, ("link", "set", "dev", g.host_port, "mtu", str(mtu))) for g in site.gateways
        ]
    commands.append(IpCommand(site.vm_ns, ("link", "set", "dev", HOST_LINK, "mtu", str(mtu))))
    return commands


def underlay_mtu_commands(site: Site, mtu: int) -> list[IpCommand]:
    """`ip` commands giving both ends of the gateway's underlay veth this MTU."""
    # The namespace end limits what the gateway sends; the bridge end limits what reaches it (larger
    # frames are dropped silently at the bridge, as on an L2 segment with this MTU). The bridge itself
    # follows its smallest port (Linux's default), which only limits what the hub sends, and TCP adapts.
    return [
        IpCommand(site.gw_ns, ("link", "set", "dev", GATEWAY_UPLINK, "mtu", str(mtu))),
        IpCommand(None, ("link", "set", "dev", site.uplink, "mtu", str(mtu))),
    ]


def sg_drop_icmp_script() -> str:
    """The nftables script that (re)creates the VPC host's table dropping inbound ICMP unreachables."""
    # Only what arrives on eth0: a security group filters the VPC's network, not the host's loopback.
    dev = f'"{HOST_LINK}"'
    return table_script(
        f"{SG_FAMILY} {SG_TABLE}",
        "  chain input {\n"
        "    type filter hook input priority -10; policy accept;\n"
        f"    iifname {dev} icmp type destination-unreachable counter drop\n"
        f"    iifname {dev} icmpv6 type {{ destination-unreachable, packet-too-big }} counter drop\n"
        "  }\n",
    )


def sg_allow_icmp_script() -> str:
    """The nftables script that removes the security group's table, whether or not it exists."""
    table = f"{SG_FAMILY} {SG_TABLE}"
    return f"add table {table}\ndelete table {table}\n"
