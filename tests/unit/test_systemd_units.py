"""The unit files in systemd/: valid for systemd (`systemd-analyze verify`), least privilege (their
settings and `systemd-analyze security --offline`), and MemoryDenyWriteExecute= really compatible with
the processes it confines (they are run here under the same seccomp rule systemd installs for it).

The units name `/usr/local/bin/wgmesh-*`; `verify` refuses an ExecStart= program that does not exist, so
the tests verify copies whose program paths point at this environment's console scripts. Nothing else
in the text changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from wgmesh import trust
from wgmesh.coordinator import identity
from wgmesh.coordinator.main import ADMIN_ENV, DEFAULT_DB
from wgmesh.coordinator.store import Store
from wgmesh.lab.wait import WaitTimeout, wait_until
from wgmesh.relay.main import RESERVED_DESCRIPTORS
from wgmesh.relay.server import DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT

ROOT = Path(__file__).resolve().parents[2]
UNIT_DIR = ROOT / "systemd"
UNITS = ("wgmesh-coordinator.service", "wgmesh-relay.service", "wgmesh-agent.service")
RELAY_TLS_DROPIN = "wgmesh-relay-tls.conf"
INSTALLED_BIN = "/usr/local/bin/"
SCRIPTS = Path(sys.executable).parent

# Highest `systemd-analyze security` exposure accepted (0 = locked down, 10 = none; a unit with no
# hardening scores 9.6). Measured with systemd 252: coordinator 1.2, relay 1.1, agent 2.2. What is
# left is what the job needs: the host's network (PrivateNetwork=, IPAddressDeny=, AF_INET/AF_INET6),
# running in the host's root (RootDirectory=), and for the agent root with CAP_NET_ADMIN, netlink,
# /dev/net/tun and the full system-service syscall set (wireguard-go and nft run under it too).
MAX_EXPOSURE = {
    "wgmesh-coordinator.service": 1.5,
    "wgmesh-relay.service": 1.5,
    "wgmesh-agent.service": 2.5,
}

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")

Unit = dict[str, dict[str, list[str]]]


def parse_unit(*texts: str) -> Unit:
    """Sections -> keys -> values in order, the way systemd reads a unit and its drop-ins:
    continuation lines joined, an empty assignment resets the list."""
    unit: Unit = {}
    section: dict[str, list[str]] = {}
    for text in texts:
        lines = text.replace("\\\n", " ").splitlines()
        for raw in lines:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = unit.setdefault(line[1:-1], {})
                continue
            key, _, value = line.partition("=")
            values = section.setdefault(key.strip(), [])
            if value.strip():
                values.append(value.strip())
            else:
                values.clear()
    return unit


def words(unit: Unit, section: str, key: str) -> list[str]:
    """Every space-separated word of every value of `key` (for list settings)."""
    return [w for value in unit.get(section, {}).get(key, []) for w in value.split()]


def last(unit: Unit, section: str, key: str) -> str | None:
    values = unit.get(section, {}).get(key, [])
    return values[-1] if values else None


def load(name: str) -> Unit:
    return parse_unit((UNIT_DIR / name).read_text())


def local_program(text: str) -> str:
    """The unit text with /usr/local/bin/wgmesh-* replaced by this environment's console scripts."""
    for script in ("wgmesh-coordinator", "wgmesh-relay", "wgmesh-agent"):
        text = text.replace(f"{INSTALLED_BIN}{script}", str(SCRIPTS / script))
    return text


@pytest.fixture(scope="module")
def unit_copies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units (and the relay's TLS drop-in, where systemd would look for it) with local programs."""
    for script in ("wgmesh-coordinator", "wgmesh-relay", "wgmesh-agent"):
        if not os.access(SCRIPTS / script, os.X_OK):
            pytest.skip(f"{SCRIPTS / script} is not installed (run `make setup`)")
    out = tmp_path_factory.mktemp("units")
    for name in UNITS:
        (out / name).write_text(local_program((UNIT_DIR / name).read_text()))
    dropin = out / "wgmesh-relay.service.d"
    dropin.mkdir()
    (dropin / "tls.conf").write_text(local_program((UNIT_DIR / RELAY_TLS_DROPIN).read_text()))
    return out


# --- systemd's own checks -------------------------------------------------------------------------


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify_accepts_the_unit(unit_copies: Path, name: str) -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit_copies / name)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit_copies,
    )
    about_us = [line for line in (done.stdout + done.stderr).splitlines() if "wgmesh" in line]
    assert done.returncode == 0, done.stdout + done.stderr
    assert about_us == []


@needs_analyze
def test_the_relay_tls_dropin_is_picked_up_and_valid(unit_copies: Path) -> None:
    """`verify` reads wgmesh-relay.service.d/tls.conf next to the unit; a broken drop-in fails it."""
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit_copies / "wgmesh-relay.service")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    merged = parse_unit(
        (UNIT_DIR / "wgmesh-relay.service").read_text(), (UNIT_DIR / RELAY_TLS_DROPIN).read_text()
    )
    [command] = merged["Service"]["ExecStart"]
    assert "--tls-cert %d/relay.crt --tls-key %d/relay.key" in command
    assert sorted(merged["Service"]["LoadCredential"]) == [
        "relay.crt:/etc/wgmesh/relay.crt",
        "relay.key:/etc/wgmesh/relay.key",
    ]


@needs_analyze
def test_security_exposure(unit_copies: Path) -> None:
    assert ANALYZE is not None
    scores: dict[str, float] = {}
    for name in UNITS:
        done = subprocess.run(
            [ANALYZE, "security", "--offline=yes", "--no-pager", str(unit_copies / name)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "bad unit file setting" not in done.stderr, done.stderr
        overall = [line for line in done.stdout.splitlines() if "Overall exposure level" in line]
        assert overall, done.stdout + done.stderr
        scores[name] = float(overall[-1].split(":", 1)[1].split()[0])
        print(f"{name}: exposure {scores[name]}")
    too_high = {n: s for n, s in scores.items() if s > MAX_EXPOSURE[n]}
    assert too_high == {}, f"exposure above {MAX_EXPOSURE}: {too_high}"


# --- the settings that make them least privilege ---------------------------------------------------


@pytest.mark.parametrize("name", UNITS)
def test_common_hardening(name: str) -> None:
    unit = load(name)
    svc = unit["Service"]
    assert last(unit, "Service", "ProtectSystem") == "strict"
    assert last(unit, "Service", "ProtectHome") == "yes"
    assert last(unit, "Service", "PrivateTmp") == "yes"
    assert last(unit, "Service", "NoNewPrivileges") == "yes"
    assert last(unit, "Service", "MemoryDenyWriteExecute") == "yes"
    assert last(unit, "Service", "UMask") == "0077"
    assert "@system-service" in words(unit, "Service", "SystemCallFilter")
    assert last(unit, "Service", "SystemCallArchitectures") == "native"
    assert "AmbientCapabilities" in svc and words(unit, "Service", "AmbientCapabilities") == []
    assert "network-online.target" in words(unit, "Unit", "After")
    assert "network-online.target" in words(unit, "Unit", "Wants")
    assert words(unit, "Install", "WantedBy") == ["multi-user.target"]


@pytest.mark.parametrize("name", UNITS)
def test_exec_start_is_the_installed_console_script(name: str) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    [command] = load(name)["Service"]["ExecStart"]
    program = command.split()[0]
    assert program == INSTALLED_BIN + name.removesuffix(".service")
    assert Path(program).name in scripts


@pytest.mark.parametrize("name", ["wgmesh-coordinator.service", "wgmesh-relay.service"])
def test_coordinator_and_relay_hold_no_capability(name: str) -> None:
    unit = load(name)
    svc = unit["Service"]
    assert "CapabilityBoundingSet" in svc and svc["CapabilityBoundingSet"] == []
    assert last(unit, "Service", "DynamicUser") == "yes"
    assert "User" not in svc
    assert last(unit, "Service", "PrivateDevices") == "yes"
    assert sorted(words(unit, "Service", "RestrictAddressFamilies")) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    # "~A B" denies both A and B (systemd: the ~ inverts the whole assignment).
    deny_lists = [v.lstrip("~").split() for v in svc["SystemCallFilter"] if v.startswith("~")]
    denied = {group for groups in deny_lists for group in groups}
    assert {"@privileged", "@resources"} <= denied
    assert last(unit, "Service", "Restart") == "on-failure"


def test_coordinator_state_directory_holds_the_default_database() -> None:
    unit = load("wgmesh-coordinator.service")
    state = last(unit, "Service", "StateDirectory")
    assert f"sqlite:////var/lib/{state}/coordinator.db" == DEFAULT_DB
    assert last(unit, "Service", "StateDirectoryMode") == "0700"
    # The admin token and the database URL come from an optional root-only environment file; with the
    # token set the coordinator initialises an empty database itself, so no ExecStartPre= init.
    assert unit["Service"]["EnvironmentFile"] == ["-/etc/wgmesh/coordinator.env"]
    assert "ExecStartPre" not in unit["Service"]
    assert ADMIN_ENV in (UNIT_DIR / "wgmesh-coordinator.service").read_text()


def test_relay_default_port_needs_no_capability() -> None:
    unit = load("wgmesh-relay.service")
    env = dict(v.split("=", 1) for v in unit["Service"]["Environment"])
    port = int(env["WGMESH_RELAY_LISTEN"].rpartition(":")[2])
    assert port == DEFAULT_PORT >= 1024
    assert "--coordinator-key-file /etc/wgmesh/coordinator-relay.pub" in unit["Service"]["ExecStart"][0]


def test_relay_open_files_limit_fits_its_connection_cap_with_room_for_handshakes() -> None:
    nofile = int(last(load("wgmesh-relay.service"), "Service", "LimitNOFILE") or 0)
    # Connections still in their TLS handshake are not counted by the cap: they need room beyond it.
    assert nofile >= 2 * DEFAULT_MAX_CONNECTIONS >= DEFAULT_MAX_CONNECTIONS + RESERVED_DESCRIPTORS


def test_agent_has_net_admin_and_nothing_broader() -> None:
    unit = load("wgmesh-agent.service")
    assert words(unit, "Service", "CapabilityBoundingSet") == ["CAP_NET_ADMIN"]
    assert sorted(words(unit, "Service", "RestrictAddressFamilies")) == [
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
        "AF_UNIX",
    ]
    assert last(unit, "Service", "DevicePolicy") == "closed"
    assert unit["Service"]["DeviceAllow"] == ["/dev/net/tun rw"]
    assert last(unit, "Service", "ProtectKernelTunables") == "yes"
    assert last(unit, "Service", "ProtectKernelModules") == "yes"
    assert sorted(words(unit, "Service", "ReadWritePaths")) == [
        "-/proc/sys/net/ipv4/ip_forward",
        "-/proc/sys/net/ipv6/conf/all/forwarding",
    ]
    assert last(unit, "Service", "StateDirectory") == "wgmesh-agent"
    assert last(unit, "Service", "StateDirectoryMode") == "0700"


def test_agent_stop_leaves_the_data_plane_running() -> None:
    """Fail-static: a stop or restart must not take the interface or wireguard-go down."""
    unit = load("wgmesh-agent.service")
    svc = unit["Service"]
    assert last(unit, "Service", "KillMode") == "process"
    assert "ExecStop" not in svc
    assert "ExecStopPost" not in svc
    assert not any("cleanup" in c for c in svc["ExecStart"])
    # /run/wireguard holds wireguard-go's UAPI socket, which must outlive the agent.
    assert last(unit, "Service", "RuntimeDirectory") == "wireguard"
    assert last(unit, "Service", "RuntimeDirectoryPreserve") == "yes"
    assert last(unit, "Service", "Restart") == "always"
    assert last(unit, "Unit", "StartLimitIntervalSec") == "0"


def test_parser_follows_systemd_list_semantics() -> None:
    unit = parse_unit("[Service]\nExecStart=/a\n", "[Service]\nExecStart=\nExecStart=/b \\\n  --x\n")
    assert unit["Service"]["ExecStart"] == ["/b    --x"]


# --- MemoryDenyWriteExecute= against the real processes -------------------------------------------

_AUDIT_ARCH_X86_64 = 0xC000003E
_SYSCALLS_X86_64 = {"mmap": 9, "mprotect": 10, "shmat": 30, "pkey_mprotect": 329}
_PROT_WRITE, _PROT_EXEC, _SHM_EXEC = 0x2, 0x4, 0o100000


def _mdwe_filter() -> bytes:
    """systemd 252's MemoryDenyWriteExecute= seccomp rule for x86-64, as classic BPF: EPERM for
    mmap(PROT_WRITE|PROT_EXEC), mprotect/pkey_mprotect(PROT_EXEC) and shmat(SHM_EXEC)."""
    ld, jeq, and_, ret = 0x20, 0x15, 0x54, 0x06
    allow, eperm = 0x7FFF0000, 0x00050001
    arg2 = 16 + 8 * 2  # offsetof(struct seccomp_data, args[2]), low 32 bits on little endian

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    def deny_if_set(mask: int) -> list[bytes]:
        return [op(ld, arg2), op(and_, mask), op(jeq, mask, 0, 1), op(ret, eperm), op(ret, allow)]

    nr = _SYSCALLS_X86_64
    return b"".join(
        [
            op(ld, 4),
            op(jeq, _AUDIT_ARCH_X86_64, 1, 0),
            op(ret, allow),
            op(ld, 0),
            op(jeq, nr["mmap"], 4, 0),
            op(jeq, nr["mprotect"], 8, 0),
            op(jeq, nr["pkey_mprotect"], 7, 0),
            op(jeq, nr["shmat"], 11, 0),
            op(ret, allow),
            *deny_if_set(_PROT_WRITE | _PROT_EXEC),
            *deny_if_set(_PROT_EXEC),
            *deny_if_set(_SHM_EXEC),
        ]
    )


def exec_confined(argv: list[str]) -> None:
    """Confine this process like MemoryDenyWriteExecute=yes (the filter is inherited by everything it
    executes), then execute `argv`. Runs in a fresh interpreter (`_confined`), not in a forked pytest."""

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    program = _mdwe_filter()
    buffer = ctypes.create_string_buffer(program)
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")
    os.execv(argv[0], argv)


_LOADER = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('units_test', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module.exec_confined(sys.argv[2:])\n"
)


def _confined(argv: list[str]) -> list[str]:
    """`argv` run under the MemoryDenyWriteExecute= filter."""
    return [sys.executable, "-c", _LOADER, __file__, *argv]


needs_x86_64 = pytest.mark.skipif(
    platform.machine() != "x86_64" or sys.platform != "linux",
    reason="the MemoryDenyWriteExecute= filter here is written for x86-64 Linux",
)


def _mdwe_run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _confined(argv),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@contextlib.contextmanager
def _mdwe_process(argv: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _confined(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(
    check: Callable[[], object], proc: subprocess.Popen[bytes], log: Path, deadline: float = 20.0
) -> None:
    """Until `check()` holds; at once a failure if the process exits (not a reason to wait on)."""

    def serving() -> bool:
        if proc.poll() is not None:
            # Not an AssertionError, which wait_until takes for "not yet": this ends the wait.
            raise RuntimeError(f"exited with {proc.returncode}: {log.read_text()}")
        try:
            return bool(check())
        except (OSError, httpx.HTTPError) as exc:
            raise AssertionError(f"{type(exc).__name__}: {exc}") from None

    try:
        wait_until(serving, deadline, "the program to serve")
    except WaitTimeout as exc:
        raise AssertionError(f"not serving: {exc}: {log.read_text()}") from None


@needs_x86_64
def test_mdwe_filter_is_in_force() -> None:
    """The control: under the filter, writable+executable memory is refused."""
    code = (
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except PermissionError:\n"
        "    print('refused')\n"
    )
    done = _mdwe_run([sys.executable, "-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused"


@needs_x86_64
def test_coordinator_and_relay_serve_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """CPython + uvloop + uvicorn + SQLAlchemy/sqlite + cryptography need no W+X memory."""
    env = {**os.environ, ADMIN_ENV: "wgmesh-systemd-test-" + "0" * 32}
    db = f"sqlite:///{tmp_path / 'coordinator.db'}"
    api = _free_port()
    coordinator = [str(SCRIPTS / "wgmesh-coordinator"), "--db", db, "--listen", f"127.0.0.1:{api}"]
    log = tmp_path / "coordinator.log"
    with _mdwe_process(coordinator, log, env) as proc:
        # Up (its identity exists from then on), then over TLS trusted by the registry's pin: the
        # handshake's cryptography runs under the filter too.
        _wait_for(
            lambda: httpx.get(f"https://127.0.0.1:{api}/healthz", timeout=2, verify=False).status_code == 200,
            proc,
            log,
        )
        store = Store(db)
        try:
            pin = identity.ensure(store).pin
        finally:
            store.close()
        tls = trust.pinned(lambda: [pin])
        assert httpx.get(f"https://127.0.0.1:{api}/healthz", timeout=5, verify=tls).status_code == 200
        assert httpx.get(f"https://127.0.0.1:{api}/", timeout=5, verify=tls).status_code == 200
    key = _mdwe_run([str(SCRIPTS / "wgmesh-coordinator"), "--db", db, "relay-key"], env=env)
    assert key.returncode == 0, key.stderr
    port = _free_port()
    relay = [
        str(SCRIPTS / "wgmesh-relay"),
        "--coordinator-key",
        key.stdout.strip(),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    log = tmp_path / "relay.log"

    def relay_accepts() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True

    with _mdwe_process(relay, log, env) as proc:
        _wait_for(relay_accepts, proc, log)


@needs_x86_64
def test_agent_side_programs_start_under_memory_deny_write_execute() -> None:
    """The agent's imports (pyroute2, cryptography, uvloop) and the programs it runs."""
    imports = (
        "import httpx, pyroute2, uvloop\n"
        "from wgmesh import keys\n"
        "import wgmesh.agent.main\n"
        "keys.generate_keypair()\n"
        "print('ok')\n"
    )
    done = _mdwe_run([sys.executable, "-c", imports])
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
    for program in ("wireguard-go", "nft"):
        path = shutil.which(program)
        if path is None:
            continue  # the Makefile installs both; without them there is nothing to run
        done = _mdwe_run([path, "--version"])
        assert done.returncode == 0, f"{program}: {done.stderr}"
