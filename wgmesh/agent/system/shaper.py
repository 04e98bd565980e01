"""Applies the HTB tree of `agent/qos.py` with pyroute2 (tc over netlink); reads back which classes exist."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Sequence
from typing import Any

from wgmesh.agent import qos
from wgmesh.agent.qos import DeleteClass, QosOp, RemoveRoot, ReplaceRoot, SetClass, SetFilters
from wgmesh.agent.system.iproute import link_index, netlink

log = logging.getLogger("wgmesh.agent.shaper")

TC_H_ROOT = 0xFFFFFFFF
_ETHERTYPES = (0x0800, 0x86DD)
_MISSING = (errno.ENOENT, errno.EINVAL, errno.ENODEV)


def _quantum(rate: int) -> int:
    # HTB's default quantum (rate / 10 in bytes) is absurd at 10 Gbit/s; keep it between an MTU and 200 kB.
    return max(1600, min(rate // 8 // 10, 200_000))


def _burst(rate: int) -> int:
    # pyroute2's default burst (rate / HZ + MTU) rounds to 0 ticks at multi-Gbit rates; 1 ms of data (at
    # least a few MTUs) lets HTB keep up with its timer without bursting far above a small limit.
    return max(rate // 8 // 1000, 4 * 1600)


def _ignore_missing(exc: Exception) -> bool:
    return getattr(exc, "code", None) in _MISSING


class TcShaper:
    """The egress HTB tree of one interface, through netlink."""

    def observe(self, ifname: str) -> frozenset[int] | None:
        """Minors of the classes under our HTB root, or None when the root is not ours (or absent)."""
        with netlink(f"reading tc of {ifname}", "tc") as ipr:
            index = link_index(ipr, ifname)
            root = [
                q
                for q in ipr.get_qdiscs(index=index)
                if q["parent"] == TC_H_ROOT
                and q["handle"] == qos.ROOT_HANDLE
                and q.get_attr("TCA_KIND") == "htb"
            ]
            if not root:
                return None
            return frozenset(
                c["handle"] & 0xFFFF
                for c in ipr.get_classes(index=index)
                if c["handle"] >> 16 == qos.ROOT_HANDLE >> 16
            )

    def apply(self, ifname: str, ops: Sequence[QosOp]) -> None:
        """Carry out `ops` in order."""
        with netlink(f"configuring tc on {ifname}", "tc") as ipr:
            index = link_index(ipr, ifname)
            for op in ops:
                match op:
                    case ReplaceRoot():
                        self._delete_root(ipr, index)
                        ipr.tc(
                            "add", "htb", index, qos.ROOT_HANDLE, parent=TC_H_ROOT, default=qos.DEFAULT_MINOR
                        )
                    case RemoveRoot():
                        self._delete_root(ipr, index)
                    case SetClass(minor=minor, parent=parent, rate=rate, ceil=ceil):
                        ipr.tc(
                            "replace-class",
                            "htb",
                            index,
                            qos.ROOT_HANDLE | minor,
                            parent=qos.ROOT_HANDLE | parent,
                            rate=f"{rate}bit",
                            ceil=f"{ceil}bit",
                            quantum=_quantum(rate),
                            burst=_burst(rate),
                            cburst=_burst(ceil),
                        )
                    case DeleteClass(minor=minor):
                        self._delete_filters(ipr, index, minor)
                        # Without a kind: pyroute2 would otherwise build (and choke on) class options.
                        ipr.tc(
                            "del-class", index=index, handle=qos.ROOT_HANDLE | minor, parent=qos.ROOT_HANDLE
                        )
                    case SetFilters(minor=minor, prefixes=prefixes):
                        self._delete_filters(ipr, index, minor)
                        for prefix in prefixes:
                            ethertype, keys = qos.u32_keys(prefix)
                            ipr.tc(
                                "add-filter",
                                "u32",
                                index,
                                parent=qos.ROOT_HANDLE,
                                prio=qos.filter_prio(minor, ethertype),
                                protocol=ethertype,
                                target=qos.ROOT_HANDLE | minor,
                                keys=keys,
                            )

    def remove(self, ifname: str) -> bool:
        """Remove our root if present (cleanup); True when something was removed."""
        if self.observe(ifname) is None:
            return False
        self.apply(ifname, [RemoveRoot()])
        return True

    @staticmethod
    def _delete_root(ipr: Any, index: int) -> None:
        try:
            ipr.tc("del", index=index, parent=TC_H_ROOT)
        except Exception as exc:
            if not _ignore_missing(exc):
                raise

    @staticmethod
    def _delete_filters(ipr: Any, index: int, minor: int) -> None:
        for ethertype in _ETHERTYPES:
            try:
                # tcm_info carries prio and protocol; pyroute2 drops `prio=` when no kind is given, and
                # a delete without them would take every filter of the qdisc.
                info = (qos.filter_prio(minor, ethertype) << 16) | socket.htons(ethertype)
                ipr.tc("del-filter", index=index, parent=qos.ROOT_HANDLE, info=info)
            except Exception as exc:
                if not _ignore_missing(exc):
                    raise
