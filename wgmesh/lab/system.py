"""The lab's only contact with the kernel: `ip`, `nft`, `wg` and `ss`, run as subprocesses."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from wgmesh.errors import WgmeshError
from wgmesh.lab.impair import TcCommand
from wgmesh.lab.layout import IpCommand
from wgmesh.lab.timescale import scaled
from wgmesh.logs import kv

log = logging.getLogger("wgmesh.lab")

WG_SOCKET_DIR = Path("/var/run/wireguard")
_SS_PID = re.compile(r"pid=(\d+)")


def require_root() -> None:
    """Network namespaces need root; say so in one line instead of failing halfway."""
    if os.geteuid() != 0:
        raise WgmeshError("the lab needs root (it creates network namespaces)", code="not_root")


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command (with `env` added to the environment, in `cwd`); with `check`, a failure raises
    WgmeshError.

    `timeout` is a budget on the reference machine, scaled to this one (wgmesh.lab.timescale).
    """
    full_env = {**os.environ, **env} if env else None
    limit = scaled(timeout)
    try:
        done = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
            env=full_env,
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        raise WgmeshError(f"{argv[0]} is not installed", code="missing_tool") from exc
    except subprocess.TimeoutExpired as exc:
        raise WgmeshError(f"{' '.join(argv[:4])} did not finish in {limit:g}s", code="timeout") from exc
    if check and done.returncode != 0:
        message = (done.stderr or done.stdout).strip().replace("\n", "; ")
        raise WgmeshError(f"{' '.join(argv[:4])} failed: {message}", code="command_failed")
    return done


def apply(commands: Sequence[IpCommand]) -> None:
    """Run `ip` commands in order, one `ip -batch` per run of commands in the same namespace."""
    for netns, group in groupby(commands, key=lambda c: c.netns):
        lines = [" ".join(c.args) for c in group]
        argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
        run(argv, input="\n".join(lines) + "\n")
        log.info("ip commands applied", extra=kv(netns=netns or "root", count=len(lines)))


def namespaces() -> list[str]:
    """Names of all named network namespaces."""
    out = run(["ip", "-j", "netns", "list"]).stdout.strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def links() -> list[str]:
    """Names of the links in the root namespace."""
    out = run(["ip", "-j", "link", "show"]).stdout.strip()
    return [entry["ifname"] for entry in json.loads(out)] if out else []


def root_addresses() -> list[str]:
    """Every IPv4 address assigned in the root namespace, as ADDRESS/LEN."""
    out = run(["ip", "-j", "-4", "addr", "show"]).stdout.strip()
    return [
        f"{a['local']}/{a['prefixlen']}"
        for entry in json.loads(out or "[]")
        for a in entry.get("addr_info", [])
    ]


def link_ipv4(link: str) -> list[str]:
    """The IPv4 addresses (without length) of a root-namespace link; none when it is missing."""
    done = run(["ip", "-j", "-4", "addr", "show", "dev", link], check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return []
    return [a["local"] for entry in json.loads(done.stdout) for a in entry.get("addr_info", [])]


def delete_namespace(name: str) -> None:
    """Delete a named namespace; missing is fine."""
    done = run(["ip", "netns", "del", name], check=False)
    if done.returncode != 0 and name in namespaces():
        raise WgmeshError(f"cannot delete namespace {name}: {done.stderr.strip()}", code="command_failed")


def delete_link(name: str) -> None:
    """Delete a root-namespace link; missing is fine (a veth goes with its namespace)."""
    done = run(["ip", "link", "del", name], check=False)
    if done.returncode != 0 and name in links():
        raise WgmeshError(f"cannot delete link {name}: {done.stderr.strip()}", code="command_failed")


def netns_pids(name: str) -> list[int]:
    """Pids of every process whose network namespace is `name`."""
    done = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def _in_netns(netns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def nft_apply(script: str, netns: str | None = None) -> None:
    """Load an nftables script atomically, in `netns` (None: the root namespace)."""
    run(_in_netns(netns, ["nft", "-f", "-"]), input=script)


def nft_has_table_in(netns: str, family: str, name: str) -> bool:
    """Whether an nftables table exists inside a namespace."""
    return run(_in_netns(netns, ["nft", "list", "table", family, name]), check=False).returncode == 0


# What tc says when asked to delete a root qdisc that is not there (a veth's default is noqueue).
_TC_ABSENT = ("handle of zero", "No such file or directory", "Invalid handle")


def tc_apply(commands: Sequence[TcCommand], *, absent_ok: bool = False) -> None:
    """Run `tc` commands in order; with `absent_ok`, deleting what does not exist is not an error."""
    if absent_ok:
        # One at a time: a batch stops at the first "nothing to delete".
        for c in commands:
            done = run(["tc", *(["-n", c.netns] if c.netns else []), *c.args], check=False)
            if done.returncode != 0 and not any(text in done.stderr for text in _TC_ABSENT):
                message = done.stderr.strip().replace("\n", "; ")
                raise WgmeshError(f"tc {' '.join(c.args[:4])} failed: {message}", code="command_failed")
        return
    for netns, group in groupby(commands, key=lambda c: c.netns):
        lines = [" ".join(c.args) for c in group]
        run(["tc", *(["-n", netns] if netns else []), "-batch", "-"], input="\n".join(lines) + "\n")
        log.info("tc commands applied", extra=kv(netns=netns or "root", count=len(lines)))


def tc_root_kind(netns: str | None, dev: str) -> str | None:
    """The kind of a link's root qdisc (`htb`, `noqueue`, ...), None when the link is missing."""
    done = run(
        ["tc", *(["-n", netns] if netns else []), "-j", "qdisc", "show", "dev", dev, "root"], check=False
    )
    if done.returncode != 0:
        return None
    qdiscs = json.loads(done.stdout or "[]")
    return str(qdiscs[0]["kind"]) if qdiscs else None


def nft_has_table(family: str, name: str) -> bool:
    """Whether an nftables table exists in the root namespace."""
    return run(["nft", "list", "table", family, name], check=False).returncode == 0


def nft_delete_table(family: str, name: str) -> None:
    """Delete an nftables table; missing is fine."""
    if nft_has_table(family, name):
        run(["nft", "delete", "table", family, name])


@dataclass(frozen=True)
class WgRead:
    """The text of `wg show IF dump` in a namespace, or why it could not be read."""

    text: str | None
    error: str | None


def wg_dump_start(netns: str, interface: str) -> subprocess.Popen[str]:
    """Start `wg show IF dump` in a namespace (the caller reads many gateways at once)."""
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, "wg", "show", interface, "dump"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wg_dump_finish(proc: subprocess.Popen[str], timeout: float = 5.0) -> WgRead:
    """Collect a `wg show` started by wg_dump_start."""
    try:
        out, _ = proc.communicate(timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return WgRead(None, "wg show timed out")
    if proc.returncode != 0:
        # The usual cause is that the agent has not created the interface yet; the rest is in the logs.
        return WgRead(None, "no WireGuard interface")
    return WgRead(out, None)


def parse_ss_pids(text: str) -> list[int]:
    """Pids named in `ss -p` output (`users:(("name",pid=123,fd=5))`)."""
    return sorted({int(m) for m in _SS_PID.findall(text)})


def listener_pids(address: str, port: int) -> list[int]:
    """Pids of the processes listening on TCP ADDRESS:PORT in the root namespace."""
    done = run(["ss", "-Hltnp", f"src {address}:{port}"], check=False)
    return parse_ss_pids(done.stdout) if done.returncode == 0 else []


def loopback_port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:PORT (our DNAT would hide such a listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def wg_sockets(prefix: str) -> list[Path]:
    """UAPI sockets in /var/run/wireguard whose interface name starts with `prefix`."""
    if not WG_SOCKET_DIR.is_dir():
        return []
    return sorted(p for p in WG_SOCKET_DIR.glob("*.sock") if p.name.startswith(prefix))


def remove_file(path: Path) -> None:
    """Remove a file; missing is fine."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
