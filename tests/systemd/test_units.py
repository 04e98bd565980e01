"""The systemd units under a real systemd (issue 22), installed as docs/deploy.md says.

`make test-systemd` makes a Debian root with systemd, wireguard-go, nftables and Python (.cache/systemd/root)
and the package's dependencies as wheels (.cache/systemd/wheels). This module boots that root with
`systemd-nspawn --boot` (a snapshot of it, removed when the container stops; a network namespace of its own),
builds the wheel from the checkout and runs the steps of docs/deploy.md marked "(tested)" inside: the
package into /opt/wgmesh, the units, the coordinator, the relay and an agent (wireguard-go) as services.
It checks that the agent enrolls and brings up its interface under the unit's hardening (CAP_NET_ADMIN
its only capability), that `systemctl stop` leaves the data plane up, and that `systemctl restart` adopts
it as it is while a second gateway pings through the tunnel without losing a reply.

The second gateway is a plain agent process in a network namespace inside the container, joined to the
container's own by a veth pair (198.18.0.1 — 198.18.0.2): the container's network stays its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging_harness import ROOT, build_dist, has_checkout, project_version

from wgmesh.lab.timescale import scaled
from wgmesh.lab.wait import NotYet, WaitTimeout, wait_until

pytestmark = pytest.mark.systemd

SYSTEMD_DIR = ROOT / ".cache" / "systemd"
BOOT_DEADLINE = 300.0
"""Seconds for the container's systemd to finish booting: a condition waited on, generous for slow hosts."""
SETTLE_DEADLINE = 120.0
"""Seconds for a service or the tunnel to reach the state waited for."""
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ADMIN_TOKEN = "wgmesh-units-admin-token-0123456789"
CAP_NET_ADMIN = 1 << 12


@dataclass
class Container:
    """A booted container: run commands in all its namespaces, as root, with a clean environment."""

    nspawn: subprocess.Popen[bytes]
    leader: int
    log: Path

    def sh(self, script: str, *, check: bool = True, timeout: float = 300) -> str:
        done = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "env", "-i", f"PATH={PATH}", "HOME=/root",
             "LANG=C.UTF-8", "sh", "-ec", script],
            capture_output=True, text=True, check=False, timeout=scaled(timeout),
        )  # fmt: skip
        if check and done.returncode != 0:
            journal = subprocess.run(
                ["nsenter", "-t", str(self.leader), "-a", "journalctl", "--no-pager", "-n", "60"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            raise AssertionError(
                f"in the container, failed ({done.returncode}):\n{script}\n{done.stdout}{done.stderr}\n"
                f"--- journal ---\n{journal.stdout}"
            )
        return done.stdout

    def unit_state(self, unit: str) -> str:
        return self.sh(f"systemctl is-active {unit} || true").strip()

    def main_pid(self, unit: str) -> int:
        return int(self.sh(f"systemctl show -p MainPID --value {unit}").strip())

    def pids_of(self, comm: str) -> list[int]:
        """PIDs (in the container) of processes named `comm` (the root has no pgrep)."""
        out = self.sh(
            f'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = "{comm}" ] && echo ${{p#/proc/}}; done; true'
        )
        return sorted(int(x) for x in out.split())


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def container_init(nspawn: int) -> int | None:
    """The container's PID 1 as this host numbers it: the descendant of systemd-nspawn whose NSpid ends in 1
    (nspawn's own short-lived helper child sits in between at first and has no PID namespace of its own)."""
    pids = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
    parents = {pid: _ppid(pid) for pid in pids}
    for pid, parent in parents.items():
        ancestor = parent
        for _ in range(4):  # nspawn → (helper) → init
            if ancestor == nspawn:
                break
            ancestor = parents.get(ancestor) if ancestor is not None else None
        if ancestor != nspawn:
            continue
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("NSpid:") and len(line.split()) >= 3 and line.split()[-1] == "1":
                    return pid
    return None


def snapshots() -> set[Path]:
    """The --ephemeral copies of the root next to it (systemd-nspawn removes its own when it ends)."""
    return set(SYSTEMD_DIR.glob(".#machine.*"))


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    # `make test-systemd` sets WGMESH_REQUIRE_SYSTEMD=1: there a test that would skip fails instead.
    skip = pytest.fail if os.environ.get("WGMESH_REQUIRE_SYSTEMD") == "1" else pytest.skip
    if os.geteuid() != 0:
        skip("needs root (systemd-nspawn)")
    if not (SYSTEMD_DIR / "root" / "lib" / "systemd" / "systemd").exists():
        skip("no Debian root: `make test-systemd` makes it")
    if shutil.which("systemd-nspawn") is None or not has_checkout():
        skip("needs systemd-nspawn and a git checkout")
    work = tmp_path_factory.mktemp("units")
    dist = build_dist(work)
    log = work / "nspawn.log"
    name = f"wgmesh-units-{os.getpid()}"
    with log.open("wb") as out:
        nspawn = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--directory", SYSTEMD_DIR / "root", "--ephemeral", "--boot",
             "--register=no", "--keep-unit", "--private-network", "--machine", name,
             "--bind=/dev/net/tun", f"--bind-ro={dist}:/mnt/dist", f"--bind-ro={SYSTEMD_DIR / 'wheels'}:/mnt/wheels",
             f"--bind-ro={ROOT / 'systemd'}:/mnt/units", "--console=pipe"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    before = snapshots()
    try:

        def started() -> bool:
            if nspawn.poll() is not None:
                pytest.fail(f"systemd-nspawn exited ({nspawn.returncode}):\n{log.read_text()}")
            return container_init(nspawn.pid) is not None

        wait_until(started, BOOT_DEADLINE, "the container to start", interval=0.2)
        box = Container(nspawn, container_init(nspawn.pid) or 0, log)

        def booted() -> bool:
            state = box.sh("systemctl is-system-running || true").strip()
            if state in ("running", "degraded"):
                return True
            raise NotYet(f"system {state}")

        wait_until(booted, BOOT_DEADLINE, "the container's systemd to finish booting", interval=0.5)
        yield box
    finally:
        stop_container(nspawn)
        for leftover in snapshots() - before:
            shutil.rmtree(leftover, ignore_errors=True)


def stop_container(nspawn: subprocess.Popen[bytes]) -> None:
    """SIGTERM: systemd-nspawn asks the container's systemd to power off, then removes its snapshot. If it
    does not end in time, the container's PID 1 and nspawn are killed by PID (the snapshot then stays, and
    the fixture removes it)."""
    if nspawn.poll() is not None:
        return
    init = container_init(nspawn.pid)
    nspawn.terminate()
    try:
        nspawn.wait(scaled(120))
        return
    except subprocess.TimeoutExpired:
        pass
    if init is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGKILL)  # its PID namespace, and every process in it, ends with it
    nspawn.kill()
    nspawn.wait()


def diagnosis(box: Container, api: str) -> str:
    """What the two gateways and the coordinator say, for a failure's message."""
    return box.sh(
        f"""
        echo '--- wgmesh status'; {api} wgmesh status 2>&1 || true
        echo '--- gw1'; journalctl -u wgmesh-agent --no-pager -o cat | tail -25
        ip -br addr; ip route
        echo '--- gw2'; tail -25 /var/lib/gw2/agent.log; ip -n gw2 -br addr; ip -n gw2 route
        """,
        check=False,
    )


def wait_active(box: Container, unit: str) -> None:
    def active() -> bool:
        state = box.unit_state(unit)
        if state == "active":
            return True
        if state == "failed":
            pytest.fail(f"{unit} failed:\n" + box.sh(f"journalctl -u {unit} --no-pager -n 40"))
        raise NotYet(f"{unit} {state}")

    wait_until(active, SETTLE_DEADLINE, f"{unit} to be active", interval=0.3)


def test_the_units_run_the_mesh_under_a_real_systemd(container: Container) -> None:
    box = container
    version = project_version()
    # Section 1 of docs/deploy.md: the package (its dependencies from the wheels fetched by make, offline).
    box.sh(
        f"""
        python3 -m venv /opt/wgmesh
        /opt/wgmesh/bin/pip install -q --disable-pip-version-check --no-index --find-links /mnt/wheels \\
            /mnt/dist/wgmesh-{version}-py3-none-any.whl
        ln -sf /opt/wgmesh/bin/wgmesh /opt/wgmesh/bin/wgmesh-coordinator /opt/wgmesh/bin/wgmesh-relay \\
               /opt/wgmesh/bin/wgmesh-agent /usr/local/bin/
        install -d -m 0755 /etc/wgmesh
        """
    )
    assert box.sh("wgmesh-agent --version").strip() == f"wgmesh-agent {version}"
    # The underlay: the container's side of a veth to the second gateway's namespace.
    box.sh(
        """
        ip netns add gw2
        ip link add underlay type veth peer name eth0 netns gw2
        ip addr add 198.18.0.1/24 dev underlay && ip link set underlay up
        ip -n gw2 addr add 198.18.0.2/24 dev eth0 && ip -n gw2 link set eth0 up && ip -n gw2 link set lo up
        """
    )
    # Section 5 (the units) and section 2 (the coordinator, the relay).
    box.sh(
        f"""
        umask 077
        printf 'WGMESH_ADMIN_TOKEN={ADMIN_TOKEN}\\nWGMESH_LISTEN=198.18.0.1:8080\\n' > /etc/wgmesh/coordinator.env
        install -m 0644 /mnt/units/wgmesh-coordinator.service /mnt/units/wgmesh-relay.service /etc/systemd/system/
        install -m 0644 /mnt/units/wgmesh-agent.service /etc/systemd/system/
        systemctl daemon-reload
        systemctl enable --now wgmesh-coordinator
        """
    )
    wait_active(box, "wgmesh-coordinator")

    # The unit is active once the process runs (Type=exec); its database and key come a moment later. Only
    # then may root read them: root opening the database first would leave files the service cannot write.
    def listening() -> bool:
        if "event=listening" not in box.sh("journalctl -u wgmesh-coordinator --no-pager -o cat"):
            raise NotYet("the coordinator has not logged that it listens")
        return True

    wait_until(listening, SETTLE_DEADLINE, "the coordinator to listen", interval=0.5)
    pin = box.sh("wgmesh-coordinator pin").strip()  # read once: every later command carries it
    api = f"WGMESH_URL=https://198.18.0.1:8080 WGMESH_TOKEN={ADMIN_TOKEN} WGMESH_PIN={pin}"

    def answers() -> bool:
        return box.sh(f"{api} wgmesh nodes --json >/dev/null 2>&1 && echo yes || true").strip() == "yes"

    wait_until(answers, SETTLE_DEADLINE, "the coordinator to answer", interval=0.5)
    # The dashboard, served from the installed package with no extra step (an unverified fetch: its page).
    page = box.sh(
        "/opt/wgmesh/bin/python -c 'import ssl, urllib.request; "
        'print(urllib.request.urlopen("https://198.18.0.1:8080/", context=ssl._create_unverified_context()).read().decode())\''
    )
    assert "<html" in page.lower(), page[:500]
    box.sh(
        """
        umask 022
        wgmesh-coordinator relay-key > /etc/wgmesh/coordinator-relay.pub
        systemctl enable --now wgmesh-relay
        """
    )
    wait_active(box, "wgmesh-relay")
    # Section 3: a gateway's agent.toml and its unit.
    token = box.sh(f"{api} wgmesh tokens create --reusable --expires 1h").strip().splitlines()[-1]
    box.sh(
        f"""
        umask 077
        printf 'name = "gw1"\\ntoken = "{token}"\\nbackend = "userspace"\\n' > /etc/wgmesh/agent.toml
        systemctl enable --now wgmesh-agent
        """
    )
    wait_active(box, "wgmesh-agent")

    def overlay_ip() -> str | None:
        words = box.sh("ip -br addr show wgmesh0 2>/dev/null || true").split()
        return words[2].split("/")[0] if len(words) > 2 and words[2].startswith("100.96.") else None

    wait_until(lambda: overlay_ip() is not None, SETTLE_DEADLINE, "gw1's interface to come up", interval=0.5)
    gw1_ip = overlay_ip()
    assert gw1_ip is not None

    def relay_listens() -> bool:
        if "event=listening" not in box.sh("journalctl -u wgmesh-relay --no-pager -o cat"):
            raise NotYet("the relay has not logged that it listens")
        return True

    wait_until(relay_listens, SETTLE_DEADLINE, "the relay to listen", interval=0.5)

    # The unit's hardening holds for the agent and the wireguard-go it started: CAP_NET_ADMIN alone.
    agent_pid = box.main_pid("wgmesh-agent")
    (wg_pid,) = box.pids_of("wireguard-go")
    for pid in (agent_pid, wg_pid):
        status = box.sh(f"cat /proc/{pid}/status")
        caps = {
            line.split(":")[0]: int(line.split()[1], 16)
            for line in status.splitlines()
            if line.startswith("Cap")
        }
        assert caps["CapBnd"] == CAP_NET_ADMIN and caps["CapEff"] & ~CAP_NET_ADMIN == 0, (pid, caps)

    # A second gateway, not a service: an agent in the gw2 namespace, pinging gw1 through the tunnel.
    box.sh(
        f"""
        mkdir -p -m 0700 /var/lib/gw2
        cd /var/lib/gw2
        nohup ip netns exec gw2 wgmesh-agent --state-dir /var/lib/gw2 --name gw2 --token '{token}' \\
            --coordinator https://198.18.0.1:8080 --backend userspace --interface wgmesh1 --metrics-listen off \\
            run > /var/lib/gw2/agent.log 2>&1 &
        echo $! > /var/lib/gw2/pid
        """
    )

    def pings() -> bool:
        return (
            box.sh(f"ip netns exec gw2 ping -c 1 -W 1 {gw1_ip} >/dev/null 2>&1 && echo ok || true").strip()
            == "ok"
        )

    try:
        wait_until(pings, SETTLE_DEADLINE, "gw2 to reach gw1 through the tunnel", interval=0.5)
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}\n{diagnosis(box, api)}") from None
    ifindex = box.sh("cat /sys/class/net/wgmesh0/ifindex").strip()

    # `systemctl stop`: the agent goes, the data plane stays (interface, wireguard-go, the peer).
    box.sh("systemctl stop wgmesh-agent")
    assert box.unit_state("wgmesh-agent") == "inactive"
    assert wg_pid in box.pids_of("wireguard-go")
    # One ping may go unanswered on any machine; the tunnel must answer again without the agent.
    wait_until(pings, SETTLE_DEADLINE, "gw2 to reach gw1 with gw1's agent stopped", interval=0.5)
    box.sh("systemctl start wgmesh-agent")
    wait_active(box, "wgmesh-agent")
    started = box.main_pid("wgmesh-agent")
    wait_until(lambda: adopted(box, started), SETTLE_DEADLINE, "the started agent to apply its netmap")

    # `systemctl restart` while gw2 pings every 0.1 s: the new agent adopts the device, no reply is lost.
    box.sh(
        f"ip netns exec gw2 ping -i 0.1 -W 1 {gw1_ip} > /var/lib/gw2/ping.log 2>&1 & echo $! > /var/lib/gw2/ping.pid"
    )
    wait_until(lambda: len(replies(box)) >= 10, SETTLE_DEADLINE, "replies before the restart")
    box.sh("systemctl restart wgmesh-agent")
    wait_active(box, "wgmesh-agent")
    restarted = box.main_pid("wgmesh-agent")
    assert restarted not in (0, started), "systemctl restart left the same agent running"
    wait_until(lambda: adopted(box, restarted), SETTLE_DEADLINE, "the restarted agent to apply its netmap")
    after = len(replies(box))
    wait_until(lambda: len(replies(box)) >= after + 10, SETTLE_DEADLINE, "replies after the restart")
    box.sh("kill -INT $(cat /var/lib/gw2/ping.pid)")
    wait_until(
        lambda: "packets transmitted" in box.sh("cat /var/lib/gw2/ping.log"),
        SETTLE_DEADLINE,
        "ping's summary",
    )
    seqs = replies(box)
    missing = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
    assert not missing, f"replies lost around the restart: icmp_seq {missing}\n" + box.sh(
        "cat /var/lib/gw2/ping.log"
    )
    assert box.sh("cat /sys/class/net/wgmesh0/ifindex").strip() == ifindex, "the interface was replaced"
    assert wg_pid in box.pids_of("wireguard-go"), "gw1's wireguard-go was replaced"
    box.sh("kill $(cat /var/lib/gw2/pid) || true")


def replies(box: Container) -> list[int]:
    """The icmp_seq of every echo reply in gw2's ping log, in order."""
    return [int(m) for m in re.findall(r"icmp_seq=(\d+) ttl=", box.sh("cat /var/lib/gw2/ping.log"))]


def adopted(box: Container, pid: int) -> bool:
    """Whether the agent of `pid` has applied its netmap to the device it found (it started no wireguard-go)."""
    journal = box.sh(f"journalctl _PID={pid} --no-pager -o cat")
    assert "wireguard-go started" not in journal, f"agent {pid} started a wireguard-go of its own"
    if "netmap applied" not in journal:
        raise NotYet(f"agent {pid} has not applied a netmap yet")
    return True
