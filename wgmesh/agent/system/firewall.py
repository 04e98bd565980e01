"""Optional masquerade through nftables: one table the agent owns per interface, nothing else.

`nft` is driven as a program (`-j` to read, `-f -` to write) because no Python binding is installed.
The table is replaced in one `nft -f` transaction, so there is never a moment without the rule, and
it is only written when what is there differs from what should be.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from typing import Any

from wgmesh.errors import BackendError
from wgmesh.logs import kv

log = logging.getLogger("wgmesh.agent.firewall")

FAMILY = "inet"
NFT_TIMEOUT = 10.0
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def table_name(ifname: str) -> str:
    """The agent's table for `ifname`."""
    return f"wgmesh_{ifname}"


def _check_name(ifname: str) -> None:
    # The name goes into nft's language; refuse anything that could need quoting.
    if not _SAFE_NAME.fullmatch(ifname):
        raise BackendError(f"interface name {ifname!r} cannot be used in an nftables rule", code="nft")


def masquerade_script(ifname: str) -> str:
    """An `nft -f` script that (re)creates the table atomically with only the masquerade rule."""
    _check_name(ifname)
    table = table_name(ifname)
    # "add" then "delete" makes the delete safe when the table is absent; all of it is one transaction.
    return (
        f"add table {FAMILY} {table}\n"
        f"delete table {FAMILY} {table}\n"
        f"table {FAMILY} {table} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    iifname "{ifname}" oifname != "{ifname}" masquerade\n'
        "  }\n"
        "}\n"
    )


def has_masquerade(listing: dict[str, Any], ifname: str) -> bool:
    """Whether an `nft -j list table` answer holds exactly our chain and rule."""
    items = listing.get("nftables", [])
    chains = [i["chain"] for i in items if "chain" in i]
    rules = [i["rule"] for i in items if "rule" in i]
    if len(chains) != 1 or len(rules) != 1:
        return False
    chain = chains[0]
    if (chain.get("name"), chain.get("type"), chain.get("hook")) != ("postrouting", "nat", "postrouting"):
        return False
    expected = [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": ifname}},
        {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": ifname}},
        {"masquerade": None},
    ]
    return bool(rules[0].get("expr") == expected)


class NftFirewall:
    """`Firewall` with the `nft` program."""

    def __init__(self, program: str = "nft") -> None:
        self.program = program

    def _run(self, args: list[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
        path = shutil.which(self.program)
        if path is None:
            raise BackendError("nft is not installed (Debian: apt install nftables)", code="no_nft")
        try:
            return subprocess.run(
                [path, *args], input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"nft {' '.join(args)}: {exc}", code="nft") from exc

    def _listing(self, ifname: str) -> dict[str, Any] | None:
        """Our table as nft's JSON, or None when it does not exist."""
        if shutil.which(self.program) is None:
            return None  # without nft there can be no table of ours
        done = self._run(["-j", "list", "table", FAMILY, table_name(ifname)])
        if done.returncode != 0:
            if "No such file or directory" in done.stderr:
                return None
            raise BackendError(f"nft list table: {done.stderr.strip()}", code="nft")
        try:
            listing: dict[str, Any] = json.loads(done.stdout)
        except json.JSONDecodeError as exc:
            raise BackendError(f"nft -j gave unreadable output: {exc}", code="nft") from exc
        return listing

    def ensure(self, ifname: str, masquerade: bool) -> int:
        """Create or repair the table when `masquerade`, remove it otherwise; returns changes made."""
        listing = self._listing(ifname)
        if not masquerade:
            return int(self.remove(ifname)) if listing is not None else 0
        if listing is not None and has_masquerade(listing, ifname):
            return 0
        done = self._run(["-f", "-"], masquerade_script(ifname))
        if done.returncode != 0:
            raise BackendError(f"nft could not add the masquerade rule: {done.stderr.strip()}", code="nft")
        log.info("masquerade enabled", extra=kv(interface=ifname, table=f"{FAMILY} {table_name(ifname)}"))
        return 1

    def remove(self, ifname: str) -> bool:
        """Delete the table if it exists."""
        if self._listing(ifname) is None:
            return False
        done = self._run(["delete", "table", FAMILY, table_name(ifname)])
        if done.returncode != 0:
            raise BackendError(f"nft delete table: {done.stderr.strip()}", code="nft")
        log.info("masquerade removed", extra=kv(interface=ifname))
        return True
