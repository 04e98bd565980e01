"""Userspace WireGuard: `wireguard-go IFNAME`, configured over its UAPI socket (keys in hex there).

wireguard-go is started in the foreground mode (`WG_PROCESS_FOREGROUND=1`) but in a session of its
own, with /dev/null for its output and nobody waiting on it: it outlives the agent (the data plane
keeps running through an agent restart or crash), and because the process that listens on the
socket is the one that keeps running, the socket's peer credentials name it. A restarted agent
therefore adopts the device by asking the socket who serves it (SO_PEERCRED) and checking that this
process is a wireguard-go for this interface in this network namespace — the socket directory is
shared by every namespace, so a name used in another one is refused, not adopted.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import assert_never

from wgmesh import keys
from wgmesh.agent.plan import (
    AddPeer,
    DeviceOp,
    RemovePeer,
    ReplaceAllowedIps,
    SetEndpoint,
    SetFwmark,
    SetKeepalive,
    SetListenPort,
    SetPrivateKey,
    SetPsk,
)
from wgmesh.agent.system.iproute import link_kind
from wgmesh.agent.wgstate import (
    DeviceSpec,
    ObservedDevice,
    PeerSpec,
    PeerStats,
    PrivateKey,
)
from wgmesh.errors import BackendError, ValidationError
from wgmesh.logs import kv
from wgmesh.values import Endpoint

log = logging.getLogger("wgmesh.agent.uapi")

SOCKET_DIR = Path("/var/run/wireguard")
PROGRAM = "wireguard-go"
# One set= transaction stays well below what wireguard-go reads comfortably in one go, and a
# failure names a small batch; 300 peers with a few allowed IPs each fit in two or three.
CHUNK_LINES = 1000
START_TIMEOUT = 5.0
RESTART_PAUSE = 0.5
STOP_TIMEOUT = 5.0
IO_TIMEOUT = 10.0
_ZERO_HEX = "0" * 64


def socket_path(ifname: str, socket_dir: Path = SOCKET_DIR) -> Path:
    """Where wireguard-go listens for `ifname` (one directory for every network namespace)."""
    return socket_dir / f"{ifname}.sock"


# --- the text protocol (pure) ---------------------------------------------------------------------


def _peer_head(public_key: str, *, update_only: bool) -> list[str]:
    # update_only: an update for a peer that is gone must not bring it back half-configured.
    head = [f"public_key={keys.key_to_hex(public_key)}"]
    return [*head, "update_only=true"] if update_only else head


def _psk_line(psk: str | None) -> str:
    return f"preshared_key={keys.key_to_hex(psk) if psk else _ZERO_HEX}"


def _blocks(op: DeviceOp, chunk: int) -> list[tuple[bool, list[str]]]:
    """The lines of one operation, as (device_level, lines) blocks; long allowed-IP lists are split."""
    match op:
        case SetPrivateKey(private_key=key):
            return [(True, [f"private_key={keys.key_to_hex(key.reveal())}"])]
        case SetListenPort(port=port):
            return [(True, [f"listen_port={port}"])]
        case SetFwmark(fwmark=mark):
            return [(True, [f"fwmark={mark}"])]
        case RemovePeer(public_key=key):
            return [(False, [*_peer_head(key, update_only=False), "remove=true"])]
        case SetEndpoint(public_key=key, endpoint=endpoint):
            return [(False, [*_peer_head(key, update_only=True), f"endpoint={endpoint}"])]
        case SetPsk(public_key=key, psk=psk):
            return [(False, [*_peer_head(key, update_only=True), _psk_line(psk)])]
        case SetKeepalive(public_key=key, keepalive=keepalive):
            line = f"persistent_keepalive_interval={keepalive or 0}"
            return [(False, [*_peer_head(key, update_only=True), line])]
        case AddPeer(peer=peer):
            head = [*_peer_head(peer.public_key, update_only=False), _psk_line(peer.psk)]
            if peer.endpoint:
                head.append(f"endpoint={peer.endpoint}")
            head.append(f"persistent_keepalive_interval={peer.keepalive or 0}")
            return _allowed_ip_blocks(peer.public_key, peer.allowed_ips, head, chunk)
        case ReplaceAllowedIps(public_key=key, allowed_ips=ips):
            return _allowed_ip_blocks(key, ips, _peer_head(key, update_only=True), chunk)
    # A new kind of operation fails the type check here, not a run.
    assert_never(op)


def _allowed_ip_blocks(
    key: str, ips: Sequence[str], head: list[str], chunk: int
) -> list[tuple[bool, list[str]]]:
    lines = [f"allowed_ip={ip}" for ip in ips]
    first = [*head, "replace_allowed_ips=true", *lines[:chunk]]
    blocks = [(False, first)]
    # Later parts add to the list the first part replaced; they must not replace it again.
    for start in range(chunk, len(lines), chunk):
        blocks.append((False, [*_peer_head(key, update_only=True), *lines[start : start + chunk]]))
    return blocks


def encode_set(ops: Sequence[DeviceOp], chunk_lines: int = CHUNK_LINES) -> list[list[str]]:
    """The `set=1` transactions (lists of lines) that apply `ops` in order.

    Device-level lines (keys, port, fwmark) must precede every `public_key=` of their transaction,
    so one that follows peer lines starts a new transaction.
    """
    per_block = max(1, chunk_lines - 4)
    transactions: list[list[str]] = []
    current: list[str] = []
    has_peers = False
    for op in ops:
        for device_level, lines in _blocks(op, per_block):
            if current and (len(current) + len(lines) > chunk_lines or (device_level and has_peers)):
                transactions.append(current)
                current, has_peers = [], False
            current.extend(lines)
            has_peers = has_peers or not device_level
    if current:
        transactions.append(current)
    return transactions


# Every apply reads the whole device back: with 1,000 peers, converting the same public keys from hex and
# parsing the same endpoints each time was a fifth of the apply. Both are pure; bounded well above one device.
_hex_to_key = functools.lru_cache(maxsize=1 << 14)(keys.hex_to_key)
_endpoint = functools.lru_cache(maxsize=1 << 14)(Endpoint.parse)


def parse_get(text: str) -> ObservedDevice:
    """Parse the answer to `get=1` (without checking errno; `UapiSocket.get` does)."""
    device: dict[str, str] = {}
    # Per peer, the last value of each key, and its allowed IPs in order (the only repeated key).
    peers: list[tuple[dict[str, str], list[str]]] = []
    current = device
    allowed: list[str] = []
    for line in text.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise BackendError(f"unexpected UAPI line {line[:40]!r}", code="uapi_protocol")
        if key == "public_key":
            current, allowed = {}, []
            peers.append((current, allowed))
        if key == "allowed_ip" and current is not device:
            allowed.append(value)
        else:
            current[key] = value
    specs: list[PeerSpec] = []
    stats: dict[str, PeerStats] = {}
    for one, allowed_ips in peers:
        public_key = _hex_to_key(one["public_key"])
        psk_hex = one.get("preshared_key", _ZERO_HEX)
        endpoint = _endpoint(one["endpoint"]) if one.get("endpoint") else None
        specs.append(
            PeerSpec(
                public_key=public_key,
                allowed_ips=tuple(allowed_ips),
                endpoint=endpoint,
                # Not through the cache: a preshared key is a secret, kept no longer than the device holds it.
                psk=None if psk_hex == _ZERO_HEX else keys.hex_to_key(psk_hex),
                keepalive=int(one.get("persistent_keepalive_interval", "0")),
            )
        )
        seconds = int(one.get("last_handshake_time_sec", "0"))
        nanos = int(one.get("last_handshake_time_nsec", "0"))
        stats[public_key] = PeerStats(
            rx_bytes=int(one.get("rx_bytes", "0")),
            tx_bytes=int(one.get("tx_bytes", "0")),
            last_handshake=datetime.fromtimestamp(seconds + nanos / 1e9, UTC) if seconds else None,
            endpoint=endpoint,
        )
    private_hex = device.get("private_key", _ZERO_HEX)
    spec = DeviceSpec.of(
        listen_port=int(device.get("listen_port", "0")),
        peers=specs,
        private_key=None if private_hex == _ZERO_HEX else PrivateKey(keys.hex_to_key(private_hex)),
        fwmark=int(device.get("fwmark", "0")),
    )
    return ObservedDevice(spec, stats)


def _errno_of(answer: str) -> int:
    for line in reversed(answer.splitlines()):
        if line.startswith("errno="):
            try:
                return int(line.removeprefix("errno="))
            except ValueError:
                break
    raise BackendError("UAPI answer without errno", code="uapi_protocol")


def _describe(code: int) -> str:
    # wireguard-go answers with an errno value (EADDRINUSE for a taken listen port, EINVAL, ...).
    return f"errno={code} ({os.strerror(abs(code))})"


# --- the socket -----------------------------------------------------------------------------------


class UapiSocket:
    """Requests to one wireguard-go over its UNIX socket, one connection per request."""

    def __init__(self, path: Path, timeout: float = IO_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    @contextlib.contextmanager
    def _connect(self) -> Iterator[socket.socket]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
            yield sock
        except OSError as exc:
            raise BackendError(f"UAPI socket {self.path}: {exc.strerror or exc}", code="uapi_io") from exc
        finally:
            sock.close()

    def _request(self, text: str) -> str:
        with self._connect() as sock:
            sock.sendall(text.encode())
            buffer = bytearray()
            # Every answer ends with its only empty line; read until then (or until the peer closes).
            while not buffer.endswith(b"\n\n"):
                data = sock.recv(65536)
                if not data:
                    break
                buffer += data
        answer = buffer.decode("utf-8", "replace")
        if not answer.endswith("\n\n"):
            raise BackendError(f"UAPI socket {self.path}: answer cut short", code="uapi_io")
        return answer

    def get(self) -> str:
        """The device's full state as UAPI text."""
        answer = self._request("get=1\n\n")
        code = _errno_of(answer)
        if code != 0:
            raise BackendError(f"UAPI get on {self.path.stem} failed: {_describe(code)}", code="uapi_errno")
        return answer

    def set(self, lines: Sequence[str]) -> None:
        """One `set=1` transaction; raise unless wireguard-go answers errno=0."""
        answer = self._request("set=1\n" + "".join(f"{line}\n" for line in lines) + "\n")
        code = _errno_of(answer)
        if code != 0:
            raise BackendError(
                f"UAPI set on {self.path.stem} failed: {_describe(code)} ({len(lines)} lines)",
                code="uapi_errno",
            )

    def server_pid(self) -> int | None:
        """The PID of the process listening on the socket (None: nobody listens)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
        finally:
            sock.close()
        pid: int = struct.unpack("3i", creds)[0]
        return pid or None


def server_pid(ifname: str, socket_dir: Path = SOCKET_DIR) -> int | None:
    """The PID serving `ifname`'s socket, or None when no process answers there."""
    path = socket_path(ifname, socket_dir)
    return UapiSocket(path, timeout=2.0).server_pid() if path.exists() else None


def running_here(ifname: str, socket_dir: Path = SOCKET_DIR) -> bool:
    """Whether a wireguard-go serves `ifname` in this network namespace (not merely somewhere)."""
    pid = server_pid(ifname, socket_dir)
    if pid is None:
        return False
    same = _same_netns(pid)
    if same is None:  # a daemonised wireguard-go: its listener PID is gone; trust the link
        return link_kind(ifname) == "tun"
    return same


# --- processes ------------------------------------------------------------------------------------


def _same_netns(pid: int) -> bool | None:
    """Whether `pid` shares our network namespace (None: cannot tell, the process is gone)."""
    try:
        theirs = os.stat(f"/proc/{pid}/ns/net")
        ours = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _is_wireguard_go(pid: int, ifname: str) -> bool:
    """Whether `pid` is a wireguard-go serving `ifname` (guards against a recycled PID)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and os.path.basename(argv[0]).startswith(b"wireguard-go") and ifname.encode() in argv


def _reap(pid: int) -> int | None:
    """Exit status of our child `pid` if it ended (reaping it), else None; None too if not ours."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done == pid else None


def _alive(pid: int) -> bool:
    _reap(pid)  # a dead child of ours stays "alive" as a zombie until reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = ""
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


class UserspaceBackend:
    """A wireguard-go device: started when missing, adopted when running, stopped on cleanup."""

    kind = "userspace"

    def __init__(self, ifname: str, *, socket_dir: Path = SOCKET_DIR, program: str = PROGRAM) -> None:
        self.ifname = ifname
        self.socket_dir = socket_dir
        self.program = program
        self.uapi = UapiSocket(socket_path(ifname, socket_dir))
        self.pid: int | None = None
        self.adopted = False

    # -- lifecycle ---------------------------------------------------------------------------------

    def _find(self) -> tuple[bool, int | None]:
        """Whether a wireguard-go serves this interface here, and its PID when it can be known."""
        if not self.uapi.path.exists():
            return False, None
        pid = self.uapi.server_pid()
        if pid is None:
            # The process died without removing its socket (SIGKILL): a stale file must not make
            # us think the device is there.
            with contextlib.suppress(FileNotFoundError):
                self.uapi.path.unlink()
            log.info("stale UAPI socket removed", extra=kv(interface=self.ifname))
            return False, None
        same = _same_netns(pid)
        if same is None:
            # Started by someone else in daemon mode: the listener's PID is its exited parent.
            if link_kind(self.ifname) is not None:
                return True, None
            raise BackendError(
                f"{self.uapi.path} answers but {self.ifname} is not in this network namespace; "
                "interface names must be unique across namespaces",
                code="interface_in_use",
            )
        if not same or not _is_wireguard_go(pid, self.ifname):
            raise BackendError(
                f"{self.uapi.path} is served by process {pid} in another network namespace or by another "
                "program; interface names must be unique across namespaces",
                code="interface_in_use",
            )
        return True, pid

    def ensure_up(self, private_key: PrivateKey, listen_port: int) -> bool:
        """Adopt the running wireguard-go for this interface, or start one and give it key and port."""
        if self.pid is not None:
            if _alive(self.pid) and self.uapi.server_pid() == self.pid:
                return False
            log.warning(
                "wireguard-go is gone; starting it again", extra=kv(interface=self.ifname, pid=self.pid)
            )
            self.pid = None
        running, pid = self._find()
        if running:
            if not self.adopted:
                log.info("wireguard-go adopted", extra=kv(interface=self.ifname, pid=pid))
            self.pid, self.adopted = pid, True
            return False
        self._start()
        self.uapi.set([f"private_key={keys.key_to_hex(private_key.reveal())}", f"listen_port={listen_port}"])
        log.info(
            "wireguard-go started",
            extra=kv(
                interface=self.ifname,
                pid=self.pid,
                listen_port=listen_port,
                key=keys.fingerprint(private_key.public_key),
            ),
        )
        return True

    @property
    def error_log(self) -> Path:
        """Where wireguard-go writes its errors while it starts (it logs nothing else unless LOG_LEVEL
        asks): read when it fails, so the reason reaches the agent's log. Removed once the start is
        decided either way, so nothing is left in the shared socket directory."""
        return self.socket_dir / f"{self.ifname}.start.log"

    def _start(self) -> None:
        """Start wireguard-go; a start that fails is tried once more (a socket or TUN name still held by
        a daemon that is going away is released a moment later), and its own reason is reported."""
        try:
            self._spawn()
        except BackendError as exc:
            if exc.code != "wireguard_go_failed":
                raise
            log.warning(
                "wireguard-go failed to start; trying once more",
                extra=kv(interface=self.ifname, error=exc.message),
            )
            time.sleep(RESTART_PAUSE)
            self._spawn()

    def _spawn(self) -> None:
        path = shutil.which(self.program)
        if path is None:
            raise BackendError(
                f"{self.program} is not installed (Debian: apt install wireguard-go)", code="no_wireguard_go"
            )
        if not os.path.exists("/dev/net/tun"):
            raise BackendError("/dev/net/tun is missing: wireguard-go needs the tun driver", code="no_tun")
        if link_kind(self.ifname) is not None:
            raise BackendError(
                f"{self.ifname} exists but no wireguard-go serves it; remove it or choose another name",
                code="interface_in_use",
            )
        env = {**os.environ, "WG_PROCESS_FOREGROUND": "1"}
        env.pop("LOG_LEVEL", None)
        devnull_in = (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
        devnull_out = (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)
        errors = (os.POSIX_SPAWN_OPEN, 2, str(self.error_log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.socket_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            # posix_spawn, not subprocess: no Popen object to warn about a child left running on
            # purpose, and setsid keeps a terminal's Ctrl-C (sent to our process group) away from it.
            pid = os.posix_spawn(
                path,
                [self.program, self.ifname],
                env,
                file_actions=[devnull_in, devnull_out, errors],
                setsid=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot start {self.program}: {exc}", code="wireguard_go_failed") from exc
        self.pid = pid
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                status = _reap(pid)
                if status is not None:
                    self.pid = None
                    raise BackendError(
                        f"{self.program} {self.ifname} exited with status {status} while starting: "
                        f"{self._reason()}",
                        code="wireguard_go_failed",
                    )
                if self.uapi.path.exists() and self.uapi.server_pid() == pid:
                    return
                time.sleep(0.01)
            self._stop(pid)
            raise BackendError(
                f"{self.program} {self.ifname} did not open its socket within {START_TIMEOUT:g}s"
            )
        finally:
            # A running daemon keeps writing to the unlinked file: harmless, and it was /dev/null before.
            with contextlib.suppress(FileNotFoundError):
                self.error_log.unlink()

    def _reason(self) -> str:
        """The last lines wireguard-go wrote, on one line (it names what failed: the TUN, the socket)."""
        try:
            lines = self.error_log.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return " / ".join(line.strip() for line in lines[-3:])[:400] or "it said nothing"

    def _stop(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid):
            if time.monotonic() > deadline:
                log.warning("wireguard-go ignored SIGTERM; killing it", extra=kv(pid=pid))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + STOP_TIMEOUT
            time.sleep(0.02)

    def cleanup(self) -> None:
        """Stop the wireguard-go serving this interface here (it removes the link and its socket)."""
        pid = self.pid
        if pid is None:
            with contextlib.suppress(BackendError):
                _running, pid = self._find()
        if pid is not None and _is_wireguard_go(pid, self.ifname) and _same_netns(pid):
            self._stop(pid)
            log.info("wireguard-go stopped", extra=kv(interface=self.ifname, pid=pid))
        self.pid = None
        if self.uapi.path.exists() and self.uapi.server_pid() is None:
            with contextlib.suppress(FileNotFoundError):
                self.uapi.path.unlink()

    # -- configuration -----------------------------------------------------------------------------

    def observe(self) -> ObservedDevice:
        """The device's configuration and counters, from one `get=1`."""
        text = self.uapi.get()
        try:
            return parse_get(text)
        except (ValueError, KeyError, ValidationError) as exc:  # ValidationError: a bad endpoint
            raise BackendError(
                f"unreadable UAPI answer from {self.ifname}: {exc}", code="uapi_protocol"
            ) from exc

    def apply(self, ops: Sequence[DeviceOp]) -> None:
        """Send `ops` as one or more `set=1` transactions."""
        for lines in encode_set(ops):
            self.uapi.set(lines)
