"""The lab's runtime switches: one table of changes to a site's machine that the record keeps.

Every switch has one shape: check its value, change the site's namespaces (nftables, tc or ip, as
`impair` and `cloud` write them), record what is now in force, save the record, log. Only the change,
the record entry and the names differ, so each switch is a row here and `flip` is the one mechanism.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from wgmesh.lab import system
from wgmesh.lab.api import admin_client
from wgmesh.lab.cloud import (
    LAN_MTU,
    UNDERLAY_MTU,
    MtuRange,
    check_mtu,
    lan_mtu_commands,
    sg_allow_icmp_script,
    sg_drop_icmp_script,
    underlay_mtu_commands,
    with_mtu,
)
from wgmesh.lab.impair import (
    Pair,
    block_udp_script,
    check_pair,
    parse_rate,
    tcp_scripts,
    throttle_commands,
    unblock_udp_script,
    unthrottle_commands,
)
from wgmesh.lab.layout import IpCommand, Site
from wgmesh.lab.record import LabState, save
from wgmesh.logs import kv
from wgmesh.values import P2PPolicy

log = logging.getLogger("wgmesh.lab")

V = TypeVar("V")
# The record's entries for the switches: sites with the switch on, or site -> value.
SiteList = Literal["blocked_udp", "sg_drop_icmp"]
SiteValues = Literal["throttled_udp", "lan_mtu", "underlay_mtu"]


def joined(sites: Sequence[int], index: int, _: object = None) -> list[int]:
    """`sites` with `index` in it, sorted."""
    return sorted({*sites, index})


def left(sites: Sequence[int], index: int, _: object = None) -> list[int]:
    """`sites` without `index`."""
    return [i for i in sites if i != index]


def valued(values: Mapping[int, V], index: int, value: V) -> dict[int, V]:
    """`values` with site `index` at `value`, by site."""
    return dict(sorted({**values, index: value}.items()))


def dropped(values: Mapping[int, V], index: int, _: object = None) -> dict[int, V]:
    """`values` without site `index`."""
    return {i: v for i, v in values.items() if i != index}


@dataclass(frozen=True)
class Switch(Generic[V]):
    """One runtime switch: what it changes on a site, and how the record's entry follows."""

    event: str  # the log line, e.g. "udp blocked"
    change: Callable[[Site, V], None]  # the change to the site's namespaces; idempotent
    entry: SiteList | SiteValues  # the record's field that says where the switch is in force
    recorded: Callable[..., object]  # (the entry, site index, value) -> the entry after the change
    check: Callable[[V], V] = lambda value: value  # refuses a bad value before anything changes
    on_host: bool = False  # acts on the VPC host (and names it), not on the gateway
    value_name: str | None = None  # the value's key in the log line

    def flip(self, state: LabState, index: int, value: V) -> V:
        """Apply the switch to site `index` of the lab, record it, and return the (normalised) value."""
        value = self.check(value)
        site = state.plan().site(index)
        self.change(site, value)
        setattr(state, self.entry, self.recorded(getattr(state, self.entry), index, value))
        save(state)
        fields: dict[str, object] = {"lab": state.name, "node": site.host if self.on_host else site.node}
        if self.value_name is not None:
            fields[self.value_name] = value
        log.info(self.event, extra=kv(**fields))
        return value


def _nft(
    event: str, script: Callable[[], str], entry: SiteList, on: bool, *, on_host: bool = False
) -> Switch[None]:
    """A switch that loads an nftables script in the gateway's (or the VPC host's) namespace."""

    def change(site: Site, _: None) -> None:
        system.nft_apply(script(), netns=site.vm_ns if on_host else site.gw_ns)

    return Switch(event, change, entry, joined if on else left, on_host=on_host)


def _mtu(
    event: str, commands: Callable[[Site, int], list[IpCommand]], entry: SiteValues, limits: MtuRange
) -> Switch[int]:
    """A switch that sets an MTU with `ip`; 1500 is the default again and leaves the record."""
    return Switch(
        event,
        lambda site, mtu: system.apply(commands(site, mtu)),
        entry,
        with_mtu,
        check=lambda mtu: check_mtu(mtu, limits),
        value_name="mtu",
    )


def _throttle(site: Site, rate: str) -> None:
    # Replacing any earlier limit: tc refuses a second root qdisc.
    system.tc_apply(unthrottle_commands(site), absent_ok=True)
    system.tc_apply(throttle_commands(site, rate))


BLOCK_UDP = _nft("udp blocked", block_udp_script, "blocked_udp", on=True)
UNBLOCK_UDP = _nft("udp unblocked", unblock_udp_script, "blocked_udp", on=False)
THROTTLE_UDP: Switch[str] = Switch(
    "udp throttled", _throttle, "throttled_udp", valued, check=parse_rate, value_name="rate"
)
UNTHROTTLE_UDP: Switch[None] = Switch(
    "udp unthrottled",
    lambda site, _: system.tc_apply(unthrottle_commands(site), absent_ok=True),
    "throttled_udp",
    dropped,
)
SET_LAN_MTU = _mtu("lan mtu set", lan_mtu_commands, "lan_mtu", LAN_MTU)
# No restart needed: the agent re-measures its underlay with every status report (every 10 s), and
# its next apply fits the tunnel MTU to it.
SET_UNDERLAY_MTU = _mtu("underlay mtu set", underlay_mtu_commands, "underlay_mtu", UNDERLAY_MTU)
SG_DROP_ICMP = _nft("icmp unreachable dropped", sg_drop_icmp_script, "sg_drop_icmp", on=True, on_host=True)
SG_ALLOW_ICMP = _nft("icmp unreachable allowed", sg_allow_icmp_script, "sg_drop_icmp", on=False, on_host=True)


def set_p2p(state: LabState, index: int, policy: P2PPolicy) -> None:
    """Set gateway `index`'s P2P policy through the coordinator (the node must be enrolled).

    Not a row of the table: the change goes through the coordinator's API, not the site's namespaces.
    """
    site = state.plan().site(index)
    with admin_client(state) as api:
        api.json("PATCH", f"/api/v1/nodes/{site.node}", json={"p2p": policy})
    state.p2p_off = joined(state.p2p_off, index) if policy == "off" else left(state.p2p_off, index)
    save(state)
    log.info("p2p policy set", extra=kv(lab=state.name, node=site.node, p2p=policy))


def set_tcp_blocked(state: LabState, a: int, b: int, blocked: bool) -> Pair:
    """Block (or let through again) all TCP between the underlay addresses of gateways `a` and `b`, in both
    gateways' namespaces; returns the pair, lower site first. Idempotent.

    Not a row of the table: the switch belongs to a pair of sites, and each gateway's table is rebuilt
    from every pair in force (impair.tcp_scripts), so a pair's change leaves the gateway's other pairs alone.
    """
    pair = check_pair((a, b), "site pair")
    plan = state.plan()
    for index in pair:
        plan.site(index)  # an unknown site is bad usage, found before anything changes
    pairs = sorted({*state.blocked_tcp, pair}) if blocked else [p for p in state.blocked_tcp if p != pair]
    for netns, script in tcp_scripts(plan, pairs, pair).items():
        system.nft_apply(script, netns=netns)
    state.blocked_tcp = pairs
    save(state)
    event = "tcp blocked" if blocked else "tcp unblocked"
    log.info(event, extra=kv(lab=state.name, node=plan.site(pair[0]).node, peer=plan.site(pair[1]).node))
    return pair
