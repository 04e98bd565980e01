"""The agent's data plane with 1,000 peers: first apply, apply of a change, RSS, routes (issue 19).

Run as root: `nice -n 10 .venv/bin/python benchmarks/agent_scale.py [--peers 1000] [--rounds 6] [--profile]`.

Two network namespaces of its own (`wgas-PID`, `wgasa-PID`), nothing addressed outside them; the
endpoints in 198.18.0.0/15 have no route there, so WireGuard's keepalives go nowhere.

(a) **The data plane**: a process inside the first namespace holds `DataPlane` (wgmesh/agent/dataplane.py,
    the real userspace backend: wireguard-go over UAPI, routes over netlink, the nftables table) and applies
    a generated netmap of N peers (real keys, overlay /32s in 100.96.0.0/16, one /24 each in 10.0.0.0/8,
    endpoints in 198.18.0.0/15); then the same netmap again (nothing to do); then, `--rounds` times, a
    change — one peer removed, one added, one endpoint moved, one /24 moved from one peer to another —
    and back. Each change must cost exactly 5 device operations and 4 route operations (a pure diff), and
    neither wireguard-go nor the interface may be replaced (same pid, same ifindex).
(b) **A real `wgmesh-agent`** in the second namespace, started from a state directory holding that
    netmap (the fail-static start: it applies its cached netmap before reaching any coordinator, and
    there is none to reach). Its RSS is read once its interface holds the N peers and its routes are in,
    and again a few seconds later. This is the process the 60 MB goal is about: the agent with its
    scheduler, HTTP client, metrics and status servers, holding the netmap as it does in production.

Prints the figures and their goals (change ≤ 100 ms, RSS ≤ 60 MB); exits 1 when a pure-diff check fails.
With `--profile`, (a) also prints the top functions of one change's apply (cProfile, cumulative).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wgmesh import keys
from wgmesh.agent.system.wireguard_uapi import socket_path
from wgmesh.lab import NotYet, WaitTimeout, wait_until
from wgmesh.models import NetMap, PeerConfig

APPLY_GOAL_MS = 100.0
RSS_GOAL_MB = 60.0
LISTEN_PORT = 51820
ROUTE_PROTO = "119"
EXPECTED_DEVICE_OPS = 5  # remove, add, endpoint, the /24 taken from one peer and given to another
EXPECTED_ROUTE_OPS = 4  # the removed peer's two routes and the added peer's two; a moved /24 keeps its route


# --- the netmaps (pure) ----------------------------------------------------------------------------


def _peer(index: int, public_key: str, *, endpoint_host: int = 10) -> PeerConfig:
    """Peer `index` (2 and up): overlay 100.96.H.L, LAN 10.H.L.0/24, endpoint 198.18.(index / 200).x."""
    high, low = divmod(index, 256)
    return PeerConfig(
        node_id=index,
        name=f"gw{index}",
        public_key=public_key,
        overlay_ip=f"100.96.{high}.{low}",
        allowed_ips=[f"100.96.{high}.{low}/32", f"10.{high}.{low}.0/24"],
        endpoints=[f"198.18.{index // 200}.{endpoint_host + index % 200}:{LISTEN_PORT}"],
    )


def base_netmap(public_keys: list[str], version: int = 1) -> NetMap:
    """Node 1's netmap with peers 2 .. len(public_keys)+1."""
    return NetMap(
        version=version,
        node_id=1,
        name="gw1",
        overlay_ip="100.96.0.1",
        overlay_cidr="100.96.0.0/16",
        listen_port=LISTEN_PORT,
        p2p="auto",
        peers=[_peer(i + 2, key) for i, key in enumerate(public_keys)],
    )


def changed_netmap(base: NetMap, newcomer_key: str, version: int) -> NetMap:
    """`base` with its first peer removed, a new one added, the second's endpoint moved and the third's
    /24 moved to the fourth (as an admin moving a subnet between gateways)."""
    peers = [p.model_dump(mode="json") for p in base.peers[1:]]
    peers[0]["endpoints"] = [f"198.19.0.{peers[0]['node_id'] % 250 + 1}:51999"]
    lan = peers[1]["allowed_ips"].pop()
    peers[2]["allowed_ips"].append(lan)
    peers.append(_peer(len(base.peers) + 2, newcomer_key, endpoint_host=20).model_dump(mode="json"))
    # Validated, as a netmap from the coordinator is (model_copy would keep the JSON strings as they are).
    return NetMap.model_validate({**base.model_dump(mode="json"), "version": version, "peers": peers})


# --- measuring -------------------------------------------------------------------------------------


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process, in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for process {pid}")


def count_routes(ifname: str, netns: str | None = None) -> int:
    """Routes the agent installed on `ifname` (its protocol number)."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run(
        [*prefix, "ip", "-4", "route", "show", "dev", ifname, "proto", ROUTE_PROTO],
        capture_output=True,
        text=True,
        check=True,
    )
    return len([line for line in done.stdout.splitlines() if line.strip()])


def ifindex(ifname: str) -> int:
    return int(Path(f"/sys/class/net/{ifname}/ifindex").read_text())


# --- (a) inside the namespace: the data plane -----------------------------------------------------


def inner(peers: int, rounds: int, ifname: str, netmap_out: Path, profile: bool) -> dict[str, Any]:
    """Run in the benchmark's namespace: apply the netmaps, return the figures."""
    from wgmesh.agent.dataplane import DataPlane  # noqa: PLC0415 - after the process entered its namespace

    started = time.perf_counter()
    own = keys.generate_keypair()
    public_keys = [keys.generate_keypair().public_key for _ in range(peers)]
    newcomer = keys.generate_keypair().public_key
    base = base_netmap(public_keys)
    generate_s = time.perf_counter() - started
    rss_before = rss_mb()
    netmap_out.write_text(
        json.dumps({"private_key": own.private_key, "netmap": base.model_dump(mode="json")})
    )

    plane = DataPlane(ifname, "userspace", own.private_key, LISTEN_PORT)
    try:
        plane.up()
        first = plane.apply(base)
        # The userspace backend's wireguard-go: the same process must hold the device to the end.
        pid, index = getattr(plane.wireguard, "pid", None), ifindex(ifname)
        again = plane.apply(base)
        changes: list[dict[str, Any]] = []
        version = 2
        for n in range(rounds):
            # Out and back: each direction is one change of the same size.
            target = (
                changed_netmap(base, newcomer, version)
                if n % 2 == 0
                else NetMap.model_validate({**base.model_dump(mode="json"), "version": version})
            )
            version += 1
            if profile and n == 0:
                import cProfile  # noqa: PLC0415
                import pstats  # noqa: PLC0415

                prof = cProfile.Profile()
                result = prof.runcall(plane.apply, target)
                stats = pstats.Stats(prof, stream=sys.stderr)
                stats.sort_stats("cumulative").print_stats(45)
                cpu = None
            else:
                cpu_start = time.process_time()
                result = plane.apply(target)
                cpu = (time.process_time() - cpu_start) * 1000
            changes.append(
                {
                    "ms": result.seconds * 1000,
                    "cpu_ms": cpu,
                    "device_ops": result.device_ops,
                    "route_ops": result.route_ops,
                }
            )
        observed = plane.wireguard.observe()
        wg_pid = getattr(plane.wireguard, "pid", None)
        return {
            "peers": peers,
            "generate_s": generate_s,
            "first_ms": first.seconds * 1000,
            "first_ops": [first.device_ops, first.route_ops],
            "noop_ms": again.seconds * 1000,
            "noop_ops": again.operations,
            "changes": changes,
            "peers_held": len(observed.spec.peers),
            "routes": count_routes(ifname),
            "rss_before_mb": rss_before,
            "rss_mb": rss_mb(),
            "wireguard_go_rss_mb": rss_mb(wg_pid) if wg_pid else None,
            "same_daemon": pid == wg_pid,
            "same_ifindex": index == ifindex(ifname),
        }
    finally:
        plane.cleanup()


# --- (b) a real wgmesh-agent ----------------------------------------------------------------------


def agent_state(state_dir: Path, private_key: str, netmap: dict[str, Any]) -> None:
    """A state directory as an enrolled agent leaves it: key, enrollment, pin and the cached netmap."""
    state_dir.mkdir(mode=0o700)
    files = {
        "private.key": private_key + "\n",
        # Nothing listens at this address in the namespace: the agent stays on its cached netmap.
        "enrollment.json": json.dumps(
            {"node_id": 1, "credential": "bench", "coordinator": "https://127.0.0.1:9"}
        ),
        "coordinator-pin.json": json.dumps({"pin": "sha256:" + "0" * 64, "next": None}),
        "netmap.json": json.dumps(netmap),
    }
    for name, text in files.items():
        path = state_dir / name
        path.write_text(text)
        path.chmod(0o600)


def real_agent(netns: str, ifname: str, state_dir: Path, peers: int, log: Path) -> dict[str, Any]:
    """Start wgmesh-agent in `netns` on the cached netmap; its RSS once it holds it, and 5 s later."""
    program = Path(sys.executable).with_name("wgmesh-agent")
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                "ip", "netns", "exec", netns, str(program),
                "--interface", ifname, "--backend", "userspace", "--state-dir", str(state_dir),
                "--coordinator", "https://127.0.0.1:9", "--listen-port", str(LISTEN_PORT),
                "--metrics-listen", "off",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:

        def holds_all() -> bool:
            if proc.poll() is not None:
                raise SystemExit(
                    f"wgmesh-agent exited with {proc.returncode}; log:\n{log.read_text()[-2000:]}"
                )
            if "data plane changed" not in log.read_text():
                raise NotYet("the agent has not applied its cached netmap yet")
            return count_routes(ifname, netns) == 2 * peers

        try:
            wait_until(holds_all, 120, f"the agent to hold {peers} peers", interval=0.5)
        except WaitTimeout as exc:
            raise SystemExit(f"{exc}; log:\n{log.read_text()[-2000:]}") from exc
        ready_s = time.monotonic() - started
        applied_ms = None
        for line in log.read_text().splitlines():
            if "data plane changed" in line and " ms=" in line:
                applied_ms = float(line.split(" ms=")[1].split()[0])
                break
        # `ip netns exec` execs the agent: the pid is the agent's own.
        first = rss_mb(proc.pid)
        time.sleep(5)
        return {
            "agent_ready_s": ready_s,
            "agent_apply_ms": applied_ms,
            "agent_rss_mb": first,
            "agent_rss_later_mb": rss_mb(proc.pid),
            "agent_routes": count_routes(ifname, netns),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # The interface outlives the agent on purpose; this removes it and its wireguard-go.
        subprocess.run(
            ["ip", "netns", "exec", netns, str(program), "--interface", ifname, "--backend", "userspace",
             "--state-dir", str(state_dir), "cleanup"],
            capture_output=True, check=False,
        )  # fmt: skip


# --- the outer run --------------------------------------------------------------------------------


def stop_namespace(netns: str) -> None:
    """End what still runs in `netns` (by pid) and delete it."""
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False)
    for pid in done.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6, help="changes applied (out and back)")
    parser.add_argument("--profile", action="store_true", help="cProfile one change's apply")
    parser.add_argument("--no-agent", action="store_true", help="skip (b), the real wgmesh-agent")
    parser.add_argument("--inner", nargs=2, metavar=("IFNAME", "NETMAP_OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 2 <= args.peers <= 60000 or args.rounds < 1:
        print("--peers must be from 2 to 60000 and --rounds at least 1", file=sys.stderr)
        return 2
    if args.inner:
        figures = inner(args.peers, args.rounds, args.inner[0], Path(args.inner[1]), args.profile)
        print(json.dumps(figures))
        return 0
    if os.geteuid() != 0:
        print("run as root (network namespaces, tun devices)", file=sys.stderr)
        return 2
    missing = [t for t in ("ip", "wireguard-go", "nft") if shutil.which(t) is None]
    if missing:
        print(f"needs {', '.join(missing)}", file=sys.stderr)
        return 2
    tag = os.getpid()
    netns, agent_ns = f"wgas-{tag}", f"wgasa-{tag}"
    work = Path(tempfile.mkdtemp(prefix="wgmesh-agent-scale-"))
    try:
        for ns in (netns, agent_ns):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        netmap_file = work / "netmap.json"
        cmd = [sys.executable, __file__, "--inner", f"wgas{tag}", str(netmap_file)]
        cmd += ["--peers", str(args.peers), "--rounds", str(args.rounds)] + (
            ["--profile"] if args.profile else []
        )
        done = subprocess.run(
            ["ip", "netns", "exec", netns, *cmd], stdout=subprocess.PIPE, text=True, check=False
        )
        if done.returncode != 0:
            print(f"the data-plane run failed ({done.returncode})", file=sys.stderr)
            return 1
        figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if not args.no_agent:
            saved = json.loads(netmap_file.read_text())
            agent_state(work / "agent", saved["private_key"], saved["netmap"])
            figures.update(
                real_agent(agent_ns, f"wgasa{tag}", work / "agent", args.peers, work / "agent.log")
            )
        return report(figures)
    finally:
        for ns in (netns, agent_ns):
            stop_namespace(ns)
        # A wireguard-go ended by SIGKILL leaves its socket in the directory every namespace shares.
        for ifname in (f"wgas{tag}", f"wgasa{tag}"):
            socket_path(ifname).unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)


def report(f: dict[str, Any]) -> int:
    """Print the figures; 1 when the change was not a pure diff or the device was replaced."""
    changes = f["changes"]
    ms = [c["ms"] for c in changes]
    pure = all(
        (c["device_ops"], c["route_ops"]) == (EXPECTED_DEVICE_OPS, EXPECTED_ROUTE_OPS) for c in changes
    )
    median = statistics.median(ms)
    print(f"peers: {f['peers']} (netmap generated in {f['generate_s']:.2f} s)")
    print(
        f"first apply: {f['first_ms']:.0f} ms ({f['first_ops'][0]} device ops, {f['first_ops'][1]} route ops)"
    )
    print(f"same netmap again: {f['noop_ms']:.1f} ms, {f['noop_ops']} operations")
    print(
        f"apply of a change (remove 1, add 1, move 1 endpoint, move 1 /24; {len(ms)} changes): "
        f"min {min(ms):.1f} ms, median {median:.1f} ms, max {max(ms):.1f} ms "
        f"(goal ≤ {APPLY_GOAL_MS:.0f} ms: ratio {median / APPLY_GOAL_MS:.2f})"
    )
    cpu = [c["cpu_ms"] for c in changes if c["cpu_ms"] is not None]
    if cpu:
        print(
            f"  CPU time of the agent's process per change (the machine's load aside; nft's and "
            f"wireguard-go's own not counted): median {statistics.median(cpu):.1f} ms"
        )
    print(
        f"  operations per change: {sorted({(c['device_ops'], c['route_ops']) for c in changes})} "
        f"(expected ({EXPECTED_DEVICE_OPS}, {EXPECTED_ROUTE_OPS})); same wireguard-go: {f['same_daemon']}, "
        f"same interface: {f['same_ifindex']}"
    )
    print(f"peers held: {f['peers_held']}, routes: {f['routes']}")
    print(
        f"RSS of the benchmark's data-plane process: {f['rss_before_mb']:.1f} MB before the netmap, "
        f"{f['rss_mb']:.1f} MB holding it; wireguard-go: {f['wireguard_go_rss_mb']:.1f} MB"
    )
    if "agent_rss_mb" in f:
        print(
            f"real wgmesh-agent on the cached {f['peers']}-peer netmap: ready in {f['agent_ready_s']:.1f} s "
            f"(its first apply {f['agent_apply_ms']} ms), {f['agent_routes']} routes, "
            f"RSS {f['agent_rss_mb']:.1f} MB, {f['agent_rss_later_mb']:.1f} MB 5 s later "
            f"(goal ≤ {RSS_GOAL_MB:.0f} MB: ratio {f['agent_rss_later_mb'] / RSS_GOAL_MB:.2f})"
        )
    ok = pure and f["same_daemon"] and f["same_ifindex"] and f["peers_held"] == f["peers"]
    if not ok:
        print("FAILED: a change was not a pure diff, or the device was replaced", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
