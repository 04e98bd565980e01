"""The agent's nftables table (agent/ruleset.py), written with the `nft` program.

`nft` is driven as a program (`-j` to read, `-f -` to write) because no Python binding is installed.
The table is replaced in one `nft -f` transaction, so there is never a moment without the rules, and
only when what is there differs from what should be: its comment carries the spec's fingerprint, and
its chains and sets must hold what the spec says (a table someone flushed by hand is rewritten).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from typing import Any

from wgmesh.agent import ruleset
from wgmesh.agent.ruleset import FAMILY, FirewallSpec, table_name
from wgmesh.errors import BackendError
from wgmesh.logs import kv

log = logging.getLogger("wgmesh.agent.firewall")

NFT_TIMEOUT = 10.0


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

    def _list(self, ifname: str, *, as_json: bool) -> str | None:
        """`nft [-j] list table` of our table, or None when it does not exist."""
        done = self._run([*(["-j"] if as_json else []), "list", "table", FAMILY, table_name(ifname)])
        if done.returncode != 0:
            if "No such file or directory" in done.stderr:
                return None
            raise BackendError(f"nft list table: {done.stderr.strip()}", code="nft")
        return done.stdout

    def _shape(self, ifname: str) -> ruleset.Shape | None:
        if shutil.which(self.program) is None:
            return None  # without nft there can be no table of ours
        text = self._list(ifname, as_json=False)
        listing = self._list(ifname, as_json=True) if text is not None else None
        if text is None or listing is None:
            return None
        try:
            parsed: dict[str, Any] = json.loads(listing)
        except json.JSONDecodeError as exc:
            raise BackendError(f"nft -j gave unreadable output: {exc}", code="nft") from exc
        return ruleset.observed_shape(text, parsed)

    def ensure(self, spec: FirewallSpec) -> int:
        """Make the table hold `spec` (absent when it is empty); returns the changes made (0 or 1)."""
        ruleset.check_ifname(spec.ifname)
        shape = self._shape(spec.ifname)
        if spec.empty:
            return int(self.remove(spec.ifname)) if shape is not None else 0
        if shape == ruleset.expected_shape(spec):
            return 0
        done = self._run(["-f", "-"], ruleset.script(spec))
        if done.returncode != 0:
            raise BackendError(
                f"nft could not write table {table_name(spec.ifname)}: {done.stderr.strip()}", code="nft"
            )
        log.info(
            "firewall table written",
            extra=kv(
                interface=spec.ifname,
                table=f"{FAMILY} {table_name(spec.ifname)}",
                masquerade=spec.masquerade,
                mss_groups=",".join(str(g.mtu) for g in spec.clamps) or "none",
            ),
        )
        return 1

    def remove(self, ifname: str) -> bool:
        """Delete the table if it exists."""
        ruleset.check_ifname(ifname)
        if shutil.which(self.program) is None or self._list(ifname, as_json=True) is None:
            return False
        done = self._run(["delete", "table", FAMILY, table_name(ifname)])
        if done.returncode != 0:
            raise BackendError(f"nft delete table: {done.stderr.strip()}", code="nft")
        log.info("firewall table removed", extra=kv(interface=ifname))
        return True
