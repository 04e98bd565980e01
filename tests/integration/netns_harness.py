"""Two network namespaces joined by a veth pair, each running a DataPlane in a worker process.

Workers are forked by one zygote per test session (see ns_worker.py).

The `pair` fixture (conftest.py) builds them; this module holds the pieces the tests use.

Addresses are 198.18.1.0/24 inside the namespaces only; names carry a random prefix so runs never
collide. Teardown stops every process left in the namespaces (by PID), deletes the namespaces (and
with them the links) and removes socket files with our prefix, whatever the test did.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wgmesh import keys
from wgmesh.agent.system.wireguard_uapi import SOCKET_DIR
from wgmesh.lab.timescale import scaled
from wgmesh.models import NetMap, PeerConfig

WORKER = Path(__file__).with_name("ns_worker.py")
TOOLS = ["ip", "wg", "wireguard-go", "nft", "ping"]
OVERLAY = "100.96.0.0/16"


def skip_reason() -> str | None:
    """Why this machine cannot run these tests (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, tun devices)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)}"
    if not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun"
    return None


def sh(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its stderr when it fails; `timeout` scales with the machine."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(timeout), check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


class Zygote:
    """The session's `ns_worker.py --zygote`: imported once, it forks each worker into its namespace."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wgmesh-zygote-"))
        self.socket = self.dir / "zygote.sock"
        self.log = self.dir / "zygote.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "--zygote", str(self.socket)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("a"),
            text=True,
        )
        assert self.proc.stdout is not None
        # A blocking read: the zygote answers once imported, or its pipe closes when it dies.
        ready = self.proc.stdout.readline().strip()
        assert ready == "ready", f"ns_worker zygote did not start; log:\n{self.log.read_text()[-3000:]}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self, ns: str, log: Path) -> socket.socket:
        """A connection to a new worker inside `ns` that logs to `log`."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(self.socket))
        conn.sendall((json.dumps({"ns": ns, "log": str(log)}) + "\n").encode())
        return conn

    def close(self) -> None:
        """End the zygote (closing its stdin) and remove its directory; its workers end on their own."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_ZYGOTE: list[Zygote] = []


def zygote() -> Zygote:
    """The session's zygote, started on first use (and again should it have died)."""
    if not _ZYGOTE or not _ZYGOTE[0].alive():
        if _ZYGOTE:
            _ZYGOTE.pop().close()
        _ZYGOTE.append(Zygote())
        atexit.register(_ZYGOTE[0].close)
    return _ZYGOTE[0]


class Worker:
    """A data-plane worker forked by the zygote into a namespace, driven one JSON command at a time."""

    def __init__(self, ns: str, log: Path) -> None:
        self.log = log
        self.conn = zygote().spawn(ns, log)
        self._answers = self.conn.makefile("r", encoding="utf-8")
        self._commands = self.conn.makefile("w", encoding="utf-8")
        hello: dict[str, Any] = json.loads(self._answers.readline() or "{}")
        assert "pid" in hello, f"{hello.get('error', 'the worker died at start')}; log:\n{self._tail()}"
        self.pid: int = hello["pid"]

    def _tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else "(no log)"

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one command; return the answer, failing the test on an error answer."""
        answer = self.try_call(cmd, **args)
        assert answer.pop("ok"), f"{cmd} failed: {answer}"
        return answer

    def try_call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one command and return the raw answer (ok or not)."""
        self._commands.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self._commands.flush()
        line = self._answers.readline()
        assert line, f"worker died; log:\n{self._tail()}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        """Let the worker exit (the data plane it managed keeps running)."""
        for stream in (self._commands, self._answers, self.conn):
            with contextlib.suppress(OSError):
                stream.close()
        deadline = time.monotonic() + scaled(10)
        while running(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if running(self.pid):
            stop_pids([self.pid])


@dataclass
class Site:
    """One namespace: its underlay address, WireGuard interface, keys and overlay address."""

    ns: str
    veth: str
    underlay: str
    ifname: str
    overlay: str
    port: int
    subnet: str
    log: Path
    keypair: keys.KeyPair = field(default_factory=keys.generate_keypair)
    worker: Worker | None = None

    def start(self, masquerade: bool = False) -> Worker:
        """Start a worker here and give it a DataPlane (not up yet)."""
        self.worker = Worker(self.ns, self.log)
        self.worker.call(
            "init",
            ifname=self.ifname,
            backend="userspace",
            private_key=self.keypair.private_key,
            listen_port=self.port,
            masquerade=masquerade,
        )
        return self.worker

    @property
    def w(self) -> Worker:
        assert self.worker is not None
        return self.worker

    def exec(self, *argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """Run a command inside this namespace."""
        return sh("ip", "netns", "exec", self.ns, *argv, check=check, timeout=timeout)

    def as_peer(self, node_id: int, **changes: Any) -> PeerConfig:
        """This site as a peer in someone else's netmap."""
        fields: dict[str, Any] = {
            "node_id": node_id,
            "name": f"site{node_id}",
            "public_key": self.keypair.public_key,
            "overlay_ip": self.overlay,
            "allowed_ips": [f"{self.overlay}/32", self.subnet],
            "endpoints": [f"{self.underlay}:{self.port}"],
        }
        fields.update(changes)
        return PeerConfig(**fields)

    def netmap(self, *peers: PeerConfig, version: int = 1) -> NetMap:
        """This site's netmap with these peers."""
        return NetMap(
            version=version,
            node_id=99,
            name=f"self-{self.ifname[-2:]}",
            overlay_ip=self.overlay,
            overlay_cidr=OVERLAY,
            listen_port=self.port,
            p2p="auto",
            peers=list(peers),
        )

    def apply(self, *peers: PeerConfig, overrides: dict[str, str] | None = None) -> dict[str, Any]:
        """Apply a netmap holding `peers` through the worker."""
        return self.w.call("apply", netmap=self.netmap(*peers).model_dump(mode="json"), overrides=overrides)

    def wg_dump(self) -> dict[str, dict[str, str]]:
        """`wg show IF dump` per peer key: endpoint and allowed IPs as wg prints them."""
        lines = self.exec("wg", "show", self.ifname, "dump").stdout.splitlines()[1:]
        peers = {}
        for line in lines:
            key, _psk, endpoint, allowed, *_ = line.split("\t")
            peers[key] = {"endpoint": endpoint, "allowed_ips": allowed}
        return peers

    def routes(self) -> str:
        """`ip route` of this namespace."""
        return sh("ip", "-n", self.ns, "route").stdout

    def ping(self, address: str, count: int = 1) -> subprocess.CompletedProcess[str]:
        """One quick ping from this namespace (to an address inside the test namespaces)."""
        return self.exec("ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", address, check=False)


@dataclass
class Pair:
    """Two sites on one veth link."""

    prefix: str
    a: Site
    b: Site
    extra_ns: list[str] = field(default_factory=list)


def running(pid: int) -> bool:
    """Whether `pid` runs; a zombie waiting for init to reap it does not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_pids(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(running(p) for p in pids):
            time.sleep(0.02)


def leftovers(prefix: str) -> list[str]:
    """Anything with our prefix still on the machine: namespaces, root links, sockets, processes."""
    found = [n for n in sh("ip", "netns", "list").stdout.split() if n.startswith(prefix)]
    found += [
        line.split()[1].rstrip(":") for line in sh("ip", "-o", "link").stdout.splitlines() if prefix in line
    ]
    found += [str(p) for p in SOCKET_DIR.glob(f"{prefix}*")]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if prefix.encode() in cmdline and b"wireguard-go" in cmdline and running(int(proc.name)):
                found.append(f"pid {proc.name}")
    return found


def remove_namespaces(namespaces: list[str]) -> None:
    """End every process left in each namespace (by PID), then delete the namespace and its links."""
    for ns in namespaces:
        pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
        stop_pids(pids)
        sh("ip", "netns", "del", ns, check=False)


@contextlib.contextmanager
def veth_pair(prefix: str, tmp_path: Path, subnets: tuple[str, str]) -> Iterator[Pair]:
    """Namespaces PREFIXa/PREFIXb on a veth (198.18.1.1/24, .2), overlay 100.96.0.1/.2, workers not
    started; everything is removed afterwards, whatever the test did."""
    a = Site(
        f"{prefix}a",
        f"{prefix}va",
        "198.18.1.1",
        f"{prefix}w1",
        "100.96.0.1",
        51820,
        subnets[0],
        tmp_path / "a.log",
    )
    b = Site(
        f"{prefix}b",
        f"{prefix}vb",
        "198.18.1.2",
        f"{prefix}w2",
        "100.96.0.2",
        51821,
        subnets[1],
        tmp_path / "b.log",
    )
    made = Pair(prefix, a, b)
    created: list[str] = []
    try:
        for site in (a, b):
            sh("ip", "netns", "add", site.ns)
            created.append(site.ns)
        sh("ip", "link", "add", a.veth, "netns", a.ns, "type", "veth", "peer", "name", b.veth, "netns", b.ns)
        for site in (a, b):
            sh("ip", "-n", site.ns, "addr", "add", f"{site.underlay}/24", "dev", site.veth)
            sh("ip", "-n", site.ns, "link", "set", site.veth, "up")
            sh("ip", "-n", site.ns, "link", "set", "lo", "up")
        yield made
    finally:
        for site in (a, b):
            if site.worker is not None:
                site.worker.stop()
        remove_namespaces([*created, *made.extra_ns])
        for sock in SOCKET_DIR.glob(f"{prefix}*.sock"):
            sock.unlink(missing_ok=True)
        # pytest shows this only for a failed test.
        for site in (a, b):
            if site.log.exists():
                print(f"--- data plane log of {site.ns} (tail) ---\n{site.log.read_text()[-4000:]}")
