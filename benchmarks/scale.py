"""The scale harness of issue 19: simulated agents against a real coordinator, at 100, 1,000 and 5,000 nodes.

Run: `.venv/bin/python benchmarks/scale.py [--sizes 100,1000,5000] [--db sqlite|postgresql|both]
[--report-interval 10] [--steady 30] [--profile DIR]`.

Per size and database it starts a coordinator process (SQLite in a temporary directory, or a fresh database
of a private PostgreSQL cluster run as `nobody` on a unix socket), pinned to core 0 with the harness on
core 1, the open-files limit raised for both and the rate limits off. The agents are real HTTP clients in
this one asyncio process (httpx, one small client each: one pool for thousands of connections makes
httpcore scan them all on every request). Each enrolls with a reusable token and a real X25519 key
(20 enrollments at a time), then long-polls its netmap (`/api/v1/netmap/changes` when the coordinator has
it, else the classic `/api/v1/netmap`) and reports its status every `--report-interval` seconds at a phase of
its own, as the agent does (wgmesh/agent/reporting.py): the whole report (one PeerStatus per peer, full mesh,
counters that grow) when the counters are due or the coordinator asks for it, a heartbeat otherwise
(`--whole-reports`: every report whole, as agents did before heartbeats).

It measures four changes (a node added, a node deleted, a route change, a P2P change) with the reports
paused: the time from the change's first request until every agent holds the new version (client clocks,
and the coordinator's `Wgmesh-Version-Age` header when it sends one), the coordinator's CPU seconds and the
bytes it sent; then `--steady` seconds of reports: the coordinator's cores, the reports accepted per second
and their latency. Then the ratios between sizes, so anything quadratic shows, and the harness's own CPU.

Every error answer is counted and printed; the run exits 1 on any 5xx. Every wait is bounded (scaled with
the size); everything started is stopped by PID at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from wgmesh import keys
from wgmesh.agent import reporting
from wgmesh.lab import postgres
from wgmesh.lab.timescale import scaled

ADMIN_TOKEN = "wga_scale-benchmark-admin-token-0123456789"
ENROLL_CONCURRENCY = 20
POLL_WAIT = 25
REPORT_INTERVAL = 10.0
STEADY_SECONDS = 30.0
NOFILE = 65536
SAMPLER = Path(__file__).with_name("stack_sampler.py")
VERSION = re.compile(rb'"version"\s*:\s*(\d+)')
CHANGES = ("node added", "node deleted", "route change", "p2p change")


class Failed(RuntimeError):
    """The run cannot go on (a wait ran out, the coordinator died): reported as one line."""


# --- processes -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile() -> None:
    """Open files up to NOFILE (or the hard limit): 5,000 long-polls are 5,000 sockets on each side."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def cores() -> tuple[set[int], set[int]] | None:
    """(the coordinator's core, the harness's) when there are two to share out, else None."""
    available = sorted(os.sched_getaffinity(0))
    return ({available[0]}, {available[1]}) if len(available) >= 2 else None


@dataclass
class Usage:
    """CPU seconds (user + system) and memory of a process, from /proc."""

    cpu: float
    rss_mb: float
    hwm_mb: float


def usage(pid: int) -> Usage:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15 of stat
    memory = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            memory[name] = int(value.split()[0]) / 1024
    return Usage(cpu, memory.get("VmRSS", 0.0), memory.get("VmHWM", 0.0))


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and its children (a PostgreSQL postmaster and its backends): its own, its
    reaped children's (cutime, cstime: a backend whose connection closed) and its live children's."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(entry.name) == root:
                total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
            elif int(fields[1]) == root:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def harness_cpu() -> float:
    self = resource.getrusage(resource.RUSAGE_SELF)
    return self.ru_utime + self.ru_stime


@dataclass
class Coordinator:
    """A coordinator process on `db_url`, plain HTTP on loopback (TLS is not what is measured here)."""

    db_url: str
    log: Path
    core: set[int] | None = None
    profile: Path | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.port = free_port()
        args = [
            "--db",
            self.db_url,
            "--listen",
            f"127.0.0.1:{self.port}",
            "--insecure-http",
            "--trusted-proxy",
            "127.0.0.1/32",
            "--metrics-listen",
            "off",
            *[arg for kind in ("enroll", "login", "failures") for arg in ("--rate-limit", f"{kind}=off")],
        ]
        if self.profile is not None:
            command = [sys.executable, str(SAMPLER), str(self.profile), "--", *args]
        else:
            command = [sys.executable, "-c", "from wgmesh.coordinator.main import main; main()", *args]
        env = {k: v for k, v in os.environ.items() if k not in ("WGMESH_DB",)}
        env["WGMESH_ADMIN_TOKEN"] = ADMIN_TOKEN
        core = self.core

        def prepare() -> None:  # in the child, before exec
            raise_nofile()
            if core is not None:
                os.sched_setaffinity(0, core)

        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=prepare,  # noqa: PLW1509 - affinity and limits only, before exec
            )
        deadline = time.monotonic() + scaled(30.0)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failed(f"the coordinator exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1, trust_env=False).status_code == 200:
                    return
            time.sleep(0.1)
        raise Failed(f"the coordinator did not answer /healthz in time: {self.tail()}")

    def tail(self) -> str:
        return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-5:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def profile_window(self, command: str) -> None:
        """Start (`on`) or end (`off LABEL`) a sampling window; an end waits for the sampler's dump."""
        if self.profile is None:
            return
        self.profile.write_text(command + "\n")
        if command.startswith("off"):
            # A saturated coordinator leaves its sampler thread little of the GIL: wait for the dump.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and self.profile.read_text().strip() != "done":
                time.sleep(0.05)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[tuple[postgres.ClusterPaths, subprocess.Popen[bytes]]]:
    """A private cluster (as the lab and tests/pg_harness.py run one), stopped by PID and removed after."""
    why = postgres.missing()
    if why is not None:
        raise Failed(why)
    paths = postgres.ClusterPaths(Path(tempfile.mkdtemp(prefix="wgmesh-scale-pg-")))
    proc: subprocess.Popen[bytes] | None = None
    try:
        postgres.initdb(paths)
        with paths.log.open("ab") as log:
            proc = subprocess.Popen(
                paths.postgres_argv(), stdout=log, stderr=subprocess.STDOUT, cwd=paths.root
            )
        deadline = time.monotonic() + scaled(30.0)
        while True:
            if proc.poll() is not None:
                raise Failed(f"postgres exited with {proc.returncode}")
            try:
                postgres.ready(paths)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise Failed("postgres did not accept connections in time") from None
                time.sleep(0.2)
        yield paths, proc
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(paths.root, ignore_errors=True)


# --- figures ---------------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Spread:
    """p50, p99 and max of a sample."""

    p50: float
    p99: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(values), quantile(values, 0.99), max(values), len(values))


@dataclass
class Change:
    """One change and how it reached the agents."""

    kind: str
    agents: int
    client: Spread
    server: Spread | None
    cpu_s: float
    db_cpu_s: float | None
    bytes_total: int
    versions: int

    @property
    def bytes_per_node(self) -> float:
        return self.bytes_total / max(self.agents, 1)


@dataclass
class Result:
    """Everything one size measured."""

    size: int
    db: str
    endpoint: str = ""
    enrolled: int = 0
    enroll_rate: float = 0.0
    enroll_p50_ms: float = 0.0
    enroll_p99_ms: float = 0.0
    initial_sync_s: float = 0.0
    first_reports_s: float = 0.0
    changes: list[Change] = field(default_factory=list)
    steady_cores: float = 0.0
    steady_db_cores: float | None = None
    reports_per_s: float = 0.0
    whole_per_s: float = 0.0
    report_latency: Spread = field(default_factory=lambda: Spread.of([]))
    heartbeat_latency: Spread = field(default_factory=lambda: Spread.of([]))
    report_bytes: float = 0.0
    rss_mb: float = 0.0
    hwm_mb: float = 0.0
    rss_after: dict[str, float] = field(default_factory=dict)
    """The coordinator's RSS (MB) after each phase: where its memory went."""
    harness_cpu_s: float = 0.0
    wall_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    failure: str | None = None
    """Why the size stopped short (its figures are those measured until then); None: it ran through."""

    @property
    def server_errors(self) -> int:
        return sum(n for key, n in self.errors.items() if key.split()[-1].startswith("5"))

    def figures(self) -> dict[str, float]:
        """The figures the table prints, by name (the ratios are taken between these)."""
        out: dict[str, float] = {
            "enroll nodes/s (20 at a time)": self.enroll_rate,
            "enroll latency p50 ms": self.enroll_p50_ms,
            "enroll latency p99 ms": self.enroll_p99_ms,
            "initial sync of all agents s": self.initial_sync_s,
            "first reports round, all synced s": self.first_reports_s,
        }
        for c in self.changes:
            out[f"{c.kind}: reach all p50 s"] = c.client.p50
            out[f"{c.kind}: reach all p99 s"] = c.client.p99
            out[f"{c.kind}: reach all max s"] = c.client.max
            if c.server is not None:
                out[f"{c.kind}: server age p50 s"] = c.server.p50
                out[f"{c.kind}: server age p99 s"] = c.server.p99
                out[f"{c.kind}: server age max s"] = c.server.max
            out[f"{c.kind}: coordinator CPU s"] = c.cpu_s
            if c.db_cpu_s is not None:
                out[f"{c.kind}: postgres CPU s"] = c.db_cpu_s
            out[f"{c.kind}: bytes sent total KB"] = c.bytes_total / 1024
            out[f"{c.kind}: bytes per node KB"] = c.bytes_per_node / 1024
        out["steady: coordinator cores"] = self.steady_cores
        if self.steady_db_cores is not None:
            out["steady: postgres cores"] = self.steady_db_cores
        out["steady: reports accepted /s (all)"] = self.reports_per_s
        out["steady: whole reports /s"] = self.whole_per_s
        out["steady: whole report latency p50 ms"] = self.report_latency.p50 * 1000
        out["steady: whole report latency p99 ms"] = self.report_latency.p99 * 1000
        out["steady: heartbeat latency p50 ms"] = self.heartbeat_latency.p50 * 1000
        out["steady: heartbeat latency p99 ms"] = self.heartbeat_latency.p99 * 1000
        out["steady: report body KB"] = self.report_bytes / 1024
        for phase, mb in self.rss_after.items():
            out[f"coordinator RSS after {phase} MB"] = mb
        out["coordinator RSS MB"] = self.rss_mb
        out["coordinator peak RSS (VmHWM) MB"] = self.hwm_mb
        out["harness CPU s (whole size)"] = self.harness_cpu_s
        out["wall s (whole size)"] = self.wall_s
        return out


# --- agents ----------------------------------------------------------------------------------------------


@dataclass
class Agent:
    """One simulated gateway: its identity, the version it holds, and what its long-poll saw."""

    index: int
    name: str
    public_key: str
    eth0_ip: str
    subnets: list[str]
    node_id: int = 0
    credential: str = ""
    version: int = -1
    reports_done: int = 0
    waiting_since: int = -1
    """The `since` of the long-poll in flight; -1 while none is."""
    seen: list[tuple[int, float, float | None]] = field(default_factory=list)
    """(version, monotonic time, Wgmesh-Version-Age) of each 200 while a change is watched."""
    client: httpx.AsyncClient | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    phase: float = 0.0
    whole_due: float = 0.0
    """When (monotonic) its counters are next due in a whole report; 0: its first report goes whole."""
    report_wanted: bool = True
    """The coordinator asked for the whole report (a heartbeat's `report_wanted`)."""

    @property
    def endpoint(self) -> str:
        return f"{self.eth0_ip}:51820"


def make_agent(i: int) -> Agent:
    host = i + 1  # 198.18.0.0/15, the lab's underlay range: never a real address
    return Agent(
        index=i,
        name=f"gw{i:05d}",
        public_key=keys.generate_keypair().public_key,
        eth0_ip=f"198.18.{host >> 8}.{host & 255}",
        subnets=[f"10.{i >> 8}.{i & 255}.0/24"],
    )


class Fleet:
    """The simulated agents and the counters they share."""

    def __init__(
        self,
        url: str,
        report_interval: float,
        limit: float,
        *,
        heartbeats: bool = True,
        whole_peers: bool = False,
    ) -> None:
        self.url = url
        self.heartbeats = heartbeats
        """Send heartbeats between whole reports, as the agent does (False: every report whole)."""
        self.whole_peers = whole_peers
        """List every peer in a whole report, as agents before `reporting.condense` (False: as the agent)."""
        # A saturated coordinator answers late rather than not at all: a request waits as long as any
        # wait of the run may (Run.limit), a long-poll that much longer than its own `wait`.
        self.limit = limit
        self.report_interval = report_interval
        self.agents: dict[str, Agent] = {}
        self.gone: set[str] = set()
        self.errors: Counter[str] = Counter()
        self.retried: Counter[str] = Counter()
        """Transport errors answered by one retry, as an agent retries: counted, not failures."""
        self.poll_bytes = 0
        self.watching = False
        self.reports_on = asyncio.Event()
        self.paused_at: float | None = None
        self.reports_in_flight = 0
        self.report_latencies: list[float] = []
        self.heartbeat_latencies: list[float] = []
        self.reports_ok = 0
        """Reports accepted, whole or heartbeats."""
        self.whole_ok = 0
        self.report_sizes: list[int] = []
        self.netmap_path = "/api/v1/netmap"
        self.epoch = time.monotonic()
        # One TLS context for every client (httpx makes one per client otherwise; plain HTTP never uses it).
        self.tls = ssl.create_default_context()
        self.rng = random.Random(19)
        self.stopping = False

    def client(self, credential: str | None) -> httpx.AsyncClient:
        """A client of its own (credential None: anonymous, for enrollments)."""
        headers = {"authorization": f"Bearer {credential}"} if credential else {}
        # Idle connections kept 30 s, as the agent keeps them (wgmesh/api_client.py KEEP_IDLE).
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=30.0)
        timeout = httpx.Timeout(POLL_WAIT + self.limit, connect=self.limit)
        return httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            limits=limits,
            verify=self.tls,
            trust_env=False,
        )

    def count(self, what: str, response: httpx.Response | BaseException) -> None:
        status = (
            str(response.status_code) if isinstance(response, httpx.Response) else type(response).__name__
        )
        self.errors[f"{what} {status}"] += 1

    # -- enrollment

    async def enroll(self, client: httpx.AsyncClient, token: str, agent: Agent) -> float:
        body = {
            "token": token,
            "name": agent.name,
            "public_key": agent.public_key,
            "listen_port": 51820,
            "subnets": agent.subnets,
            "endpoints": [agent.endpoint],
            "max_mtu": 1440,  # as the agent sends it (its underlay's limit)
        }
        for _attempt in range(5):
            started = time.perf_counter()
            try:
                r = await client.post("/api/v1/enroll", json=body)
            except httpx.TransportError as exc:
                self.count("enroll", exc)
                continue
            took = time.perf_counter() - started
            if r.status_code == 201:
                answer = r.json()
                agent.node_id = answer["node_id"]
                agent.credential = answer["credential"]
                agent.version = int(answer["netmap"]["version"])
                self.agents[agent.name] = agent
                return took
            self.count("enroll", r)
            if r.status_code < 500:
                raise Failed(f"enrollment of {agent.name} answered {r.status_code}: {r.text[:200]}")
        raise Failed(f"enrollment of {agent.name} failed five times")

    # -- the agent's loops

    def start(self, agent: Agent) -> None:
        agent.client = self.client(agent.credential)
        agent.phase = self.rng.uniform(0, self.report_interval)
        agent.tasks = [
            asyncio.create_task(self.poll_loop(agent)),
            asyncio.create_task(self.report_loop(agent)),
        ]

    async def stop(self, agent: Agent) -> None:
        for task in agent.tasks:
            task.cancel()
        for task in agent.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if agent.client is not None:
            await agent.client.aclose()

    async def poll_loop(self, agent: Agent) -> None:
        assert agent.client is not None
        while not self.stopping:
            agent.waiting_since = agent.version
            try:
                r = await self.poll(agent.client, {"since": agent.version, "wait": POLL_WAIT})
            except httpx.TransportError as exc:
                agent.waiting_since = -1
                self.count("netmap", exc)
                await asyncio.sleep(1.0)
                continue
            agent.waiting_since = -1
            if r.status_code == 200:
                self.poll_bytes += r.num_bytes_downloaded
                version = _version(r.content)
                agent.version = version
                if self.watching:
                    age = r.headers.get("wgmesh-version-age")
                    agent.seen.append((version, time.monotonic(), float(age) if age else None))
            elif r.status_code != 304:
                self.count("netmap", r)
                await asyncio.sleep(1.0)

    def report(self, agent: Agent, round_: int) -> bytes:
        """A status report as the agent sends it: one PeerStatus per peer, counters that grow; above 50
        peers, as the agent condenses it (agent/reporting.py): every simulated peer is direct, answering
        and freshly handshaken, so all are nominal, one range of node ids with their counters summed."""
        now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        grow = round_ * 150_000
        peers_of = [p for p in self.agents.values() if p is not agent and p.name not in self.gone]
        if len(peers_of) > reporting.WHOLE_UP_TO and not self.whole_peers:
            ids = [p.node_id for p in peers_of]
            rx = sum(grow + p.index * 977 for p in peers_of)
            tx = len(peers_of) * (grow + agent.index * 991)
            return (
                f'{{"endpoints":["{agent.endpoint}"],"eth0_ip":"{agent.eth0_ip}",'
                f'"netmap_version":{agent.version},"mtu":1420,"max_mtu":1440,"peers":[],'
                f'"nominal":{{"ranges":[[{min(ids)},{max(ids)}]],"count":{len(ids)},'
                f'"oldest_handshake":"{now}","rx_bytes":{rx},"tx_bytes":{tx}}}}}'
            ).encode()
        peers = ",".join(
            f'{{"public_key":"{p.public_key}","rx_bytes":{grow + p.index * 977},'
            f'"tx_bytes":{grow + agent.index * 991},"last_handshake":"{now}","endpoint":"{p.endpoint}",'
            f'"path":"direct","rtt_ms":{1 + (p.index + agent.index) % 40}.{p.index % 10},"health":"up"}}'
            for p in self.agents.values()
            if p is not agent
        )
        return (
            f'{{"endpoints":["{agent.endpoint}"],"eth0_ip":"{agent.eth0_ip}","netmap_version":{agent.version},'
            f'"mtu":1420,"max_mtu":1440,"peers":[{peers}]}}'
        ).encode()

    def pause_reports(self) -> None:
        self.reports_on.clear()
        if self.paused_at is None:
            self.paused_at = time.monotonic()

    def resume_reports(self) -> None:
        """Reports flow again, each agent's whole report as far from due as when they stopped: a real
        agent never pauses, so a pause must not make every agent's counters overdue at once."""
        if self.paused_at is not None:
            paused = time.monotonic() - self.paused_at
            for agent in self.agents.values():
                if agent.whole_due:
                    agent.whole_due += paused
            self.paused_at = None
        self.reports_on.set()

    def whole_every(self) -> float:
        """Seconds between an agent's whole reports: the agent's rule (reporting.full_every) for a full mesh,
        at the pace of `--report-interval` (a faster interval, as in the smoke test, runs it faster)."""
        peers = len(self.agents) - len(self.gone) - 1
        return reporting.full_every(peers) * self.report_interval / reporting.REPORT_INTERVAL

    async def report_loop(self, agent: Agent) -> None:
        assert agent.client is not None
        sent = 0
        while not self.stopping:
            # The agent's own slot in every interval: resuming after a pause sends no burst.
            since_epoch = time.monotonic() - self.epoch - agent.phase
            await asyncio.sleep(self.report_interval - since_epoch % self.report_interval)
            await self.reports_on.wait()
            self.reports_in_flight += 1
            try:
                # The simulated state never moves (every path direct, every handshake fresh): a report goes
                # whole when its counters are due or the coordinator wants it, as reporting.next_kind says.
                whole = not self.heartbeats or agent.report_wanted or time.monotonic() >= agent.whole_due
                if not whole:
                    whole = await self.heartbeat(agent)
                if whole:
                    await self.whole_report(agent, sent)
                    sent += 1
            except httpx.TransportError as exc:
                self.count("status", exc)
            finally:
                self.reports_in_flight -= 1

    async def whole_report(self, agent: Agent, round_: int) -> None:
        assert agent.client is not None
        body = self.report(agent, round_)
        started = time.perf_counter()
        r = await self.post(agent.client, "/api/v1/status", body)
        if r.status_code != 200:
            self.count("status", r)
            return
        agent.reports_done += 1
        agent.report_wanted = False
        every = self.whole_every()
        # After its first, an agent's whole reports come at a phase of its own (a fleet that has run a while),
        # not all together because the harness started them together.
        first = agent.whole_due == 0.0
        agent.whole_due = time.monotonic() + (self.rng.uniform(0, every) if first else every)
        self.reports_ok += 1
        self.whole_ok += 1
        self.report_latencies.append(time.perf_counter() - started)
        self.report_sizes.append(len(body))

    async def heartbeat(self, agent: Agent) -> bool:
        """Send a heartbeat; True when the whole report must go now (the coordinator wants it)."""
        assert agent.client is not None
        body = f'{{"netmap_version":{agent.version}}}'.encode()
        started = time.perf_counter()
        r = await self.post(agent.client, "/api/v1/node/heartbeat", body)
        if r.status_code != 200:
            self.count("heartbeat", r)
            return False
        agent.reports_done += 1
        self.reports_ok += 1
        self.heartbeat_latencies.append(time.perf_counter() - started)
        agent.report_wanted = bool(r.json()["report_wanted"])
        return agent.report_wanted

    async def poll(self, client: httpx.AsyncClient, params: dict[str, int]) -> httpx.Response:
        """One long-poll; once more at once when the coordinator closed the kept-alive connection as the
        request went out on it, as the agent's client does (wgmesh/api_client.py)."""
        try:
            return await client.get(self.netmap_path, params=params)
        except httpx.RemoteProtocolError as exc:
            self.retried[f"netmap {type(exc).__name__}"] += 1
        return await client.get(self.netmap_path, params=params)

    async def post(self, client: httpx.AsyncClient, path: str, body: bytes) -> httpx.Response:
        """POST a report or heartbeat; once more on a dropped connection (the agent sends its next report at
        its next tick instead; a report sent twice is harmless, and the harness's ingest counts stay
        comparable with earlier runs)."""
        for attempt in range(2):
            try:
                return await client.post(path, content=body, headers={"content-type": "application/json"})
            except httpx.TransportError as exc:
                if attempt == 1:
                    raise
                self.retried[f"{path.rsplit('/', 1)[-1]} {type(exc).__name__}"] += 1
        raise AssertionError("unreachable")


def _version(body: bytes) -> int:
    # The version leads both answers (NetMap, NetMapChange): no need to parse a megabyte of JSON for it.
    found = VERSION.search(body, 0, 400)
    if found is not None:
        return int(found.group(1))
    return int(json.loads(body)["version"])


async def wait_for(what: str, check: Callable[[], bool], limit: float, step: float = 0.02) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not done within {limit:.0f} s")
        await asyncio.sleep(step)


# --- one size --------------------------------------------------------------------------------------------


class Run:
    """One size against one running coordinator."""

    def __init__(
        self, coordinator: Coordinator, size: int, db: str, report_interval: float, steady: float,
        db_pid: int | None = None, heartbeats: bool = True, whole_peers: bool = False,
    ) -> None:  # fmt: skip
        self.c = coordinator
        self.size = size
        # A budget per wait that grows with the fleet: before deltas a change costs the coordinator
        # ~0.1 s per node (every node's full netmap), 0.3 s on a busy machine. Beyond 1,000 nodes it grows
        # with the square: bringing a full mesh up is quadratic (each of n agents learns n peers, and sends
        # a first report of n peers' counters).
        self.limit = scaled(60.0 + 0.3 * size * max(1.0, size / 1000))
        self.fleet = Fleet(
            coordinator.url, report_interval, self.limit, heartbeats=heartbeats, whole_peers=whole_peers
        )
        self.result = Result(size=size, db=db)
        self.steady = steady
        self.db_pid = db_pid

    def cpu(self) -> tuple[float, float | None]:
        return usage(self.c.pid).cpu, (tree_cpu(self.db_pid) if self.db_pid is not None else None)

    async def version(self, admin: httpx.AsyncClient) -> int:
        try:
            r = await admin.get("/healthz")
        except httpx.TransportError as exc:
            self.fleet.count("healthz", exc)
            raise Failed(f"/healthz: {type(exc).__name__} (the coordinator did not answer in time)") from exc
        self.check(r, "healthz")
        return int(r.json()["version"])

    def check(self, r: httpx.Response, what: str, ok: tuple[int, ...] = (200, 201, 204)) -> None:
        if r.status_code not in ok:
            self.fleet.count(what, r)
            raise Failed(f"{what} answered {r.status_code}: {r.text[:200]}")

    def live(self) -> list[Agent]:
        return [a for a in self.fleet.agents.values() if a.name not in self.fleet.gone]

    async def run(self) -> Result:
        started, cpu0 = time.monotonic(), harness_cpu()
        fleet = self.fleet
        async with fleet.client(ADMIN_TOKEN) as admin:
            try:
                await self.phases(admin)
            except Failed as exc:
                self.result.failure = str(exc)  # what was measured until then is still printed
            except httpx.TransportError as exc:
                self.result.failure = f"an admin call: {type(exc).__name__}"
            finally:
                fleet.stopping = True
                fleet.reports_on.set()
                await asyncio.gather(*(fleet.stop(a) for a in fleet.agents.values()))
        self.result.errors = fleet.errors
        self.result.retried = fleet.retried
        self.result.harness_cpu_s = harness_cpu() - cpu0
        self.result.wall_s = time.monotonic() - started
        return self.result

    async def phases(self, admin: httpx.AsyncClient) -> None:
        await self.enroll_all(admin)
        self.note_rss("enrollment")
        await self.detect_endpoint(admin)
        await self.sync_all(admin)
        await self.measure_changes(admin)
        self.note_rss("changes")
        await self.measure_steady(admin)
        memory = usage(self.c.pid)
        self.result.rss_mb, self.result.hwm_mb = memory.rss_mb, memory.hwm_mb

    def note_rss(self, phase: str) -> None:
        self.result.rss_after[phase] = usage(self.c.pid).rss_mb

    async def enroll_all(self, admin: httpx.AsyncClient) -> None:
        r = await admin.post(
            "/api/v1/tokens", json={"reusable": True, "expires_in": None, "description": "scale"}
        )
        self.check(r, "token")
        self.token = str(r.json()["token"])
        pending = [make_agent(i) for i in range(self.size)]
        self.next_index = self.size
        queue: asyncio.Queue[Agent] = asyncio.Queue()
        for agent in pending:
            queue.put_nowait(agent)
        took: list[float] = []

        async def worker() -> None:
            async with self.fleet.client(None) as client:
                while not queue.empty():
                    agent = queue.get_nowait()
                    took.append(await self.fleet.enroll(client, self.token, agent))

        begin = time.monotonic()
        async with asyncio.timeout(self.limit * 3):
            await asyncio.gather(*(worker() for _ in range(ENROLL_CONCURRENCY)))
        wall = time.monotonic() - begin
        self.result.enrolled = len(self.fleet.agents)
        self.result.enroll_rate = self.size / wall
        self.result.enroll_p50_ms = statistics.median(took) * 1000
        self.result.enroll_p99_ms = quantile(took, 0.99) * 1000
        print(f"  enrolled {self.size} in {wall:.1f} s", flush=True)

    async def detect_endpoint(self, admin: httpx.AsyncClient) -> None:
        agent = next(iter(self.fleet.agents.values()))
        async with self.fleet.client(agent.credential) as client:
            r = await client.get("/api/v1/netmap/changes", params={"since": agent.version, "wait": 0})
        if r.status_code in (200, 304):
            self.fleet.netmap_path = "/api/v1/netmap/changes"
        elif r.status_code not in (404, 405):
            self.fleet.count("netmap/changes", r)
        self.result.endpoint = self.fleet.netmap_path

    async def sync_all(self, admin: httpx.AsyncClient) -> None:
        """Start every agent's loops (reports paused) and wait until all hold the current version."""
        begin = time.monotonic()
        for agent in self.fleet.agents.values():
            self.fleet.start(agent)
        target = await self.version(admin)
        await wait_for("initial sync", lambda: all(a.version >= target for a in self.live()), self.limit, 0.1)
        self.result.initial_sync_s = time.monotonic() - begin
        print(f"  all {self.size} agents hold version {target} after {self.result.initial_sync_s:.1f} s")
        self.note_rss("initial sync")
        # Each agent's first report changes what peers see (eth0_ip and the public address are new to the
        # coordinator): a version each, as when a fleet comes up. That round, until every agent holds the
        # version it ends at, is measured here, so that the changes and the steady state come after it.
        begin = time.monotonic()
        self.c.profile_window("on")
        self.fleet.resume_reports()
        await wait_for(
            "every agent's first report", lambda: all(a.reports_done >= 1 for a in self.live()), self.limit
        )
        self.fleet.pause_reports()
        settled = await self.version(admin)
        await wait_for(
            "agents on the version after the first reports",
            lambda: all(a.version >= settled for a in self.live()),
            self.limit,
        )
        self.result.first_reports_s = time.monotonic() - begin
        self.c.profile_window(f"off {self.result.db}-{self.size}-first-reports")
        print(f"  first reports and their versions reached all after {self.result.first_reports_s:.1f} s")
        self.note_rss("first reports")

    async def quiet(self, admin: httpx.AsyncClient) -> int:
        """Reports paused and none in flight, every agent on the current version and polling again."""
        self.fleet.pause_reports()
        await wait_for("reports in flight", lambda: self.fleet.reports_in_flight == 0, self.limit)
        current = await self.version(admin)
        await wait_for("agents on the current version", lambda: all(a.version >= current for a in self.live()),
                       self.limit)  # fmt: skip
        await self.polling(current, self.live())
        return current

    async def polling(self, version: int, agents: list[Agent]) -> None:
        """Every agent holds `version` and waits on a long-poll for the next; then a moment for the last
        requests to reach the coordinator."""
        await wait_for(
            "agents polling again", lambda: all(a.waiting_since >= version for a in agents), self.limit
        )
        await asyncio.sleep(0.3)

    async def measure_changes(self, admin: httpx.AsyncClient) -> None:
        actions: dict[str, Callable[[httpx.AsyncClient], Awaitable[list[Agent]]]] = {
            "node added": self.add_node,
            "node deleted": self.delete_node,
            "route change": self.change_route,
            "p2p change": self.change_p2p,
        }
        for kind, action in actions.items():
            change = await self.watch(admin, kind, action)
            self.result.changes.append(change)
            print(
                f"  {kind}: all {change.agents} agents in p50 {change.client.p50:.2f} s "
                f"p99 {change.client.p99:.2f} s max {change.client.max:.2f} s, "
                f"coordinator {change.cpu_s:.2f} CPU-s, {change.bytes_total / 1024:.0f} KB",
                flush=True,
            )

    async def watch(
        self,
        admin: httpx.AsyncClient,
        kind: str,
        action: Callable[[httpx.AsyncClient], Awaitable[list[Agent]]],
    ) -> Change:
        fleet = self.fleet
        before = await self.quiet(admin)
        agents = self.live()
        for a in agents:
            a.seen.clear()
        self.c.profile_window("on")
        cpu0, db0 = self.cpu()
        bytes0 = fleet.poll_bytes
        fleet.watching = True
        t0 = time.monotonic()
        excluded = await action(admin)
        target = await self.version(admin)
        watched = [a for a in agents if a not in excluded]

        def holds(a: Agent) -> bool:
            return a.version >= target

        await wait_for(f"{kind} reaching every agent", lambda: all(holds(a) for a in watched), self.limit)
        fleet.watching = False
        await self.polling(target, watched)
        cpu1, db1 = self.cpu()
        self.c.profile_window(f"off {self.result.db}-{self.size}-{kind.replace(' ', '-')}")
        client: list[float] = []
        server: list[float] = []
        for a in watched:
            first = next((s for s in a.seen if s[0] >= target), None)
            if first is None:
                raise Failed(f"{kind}: {a.name} holds {a.version} but no answer of it was seen")
            client.append(first[1] - t0)
            if first[2] is not None:
                server.append(first[2])
        return Change(
            kind=kind,
            agents=len(watched),
            client=Spread.of(client),
            server=Spread.of(server) if server else None,
            cpu_s=cpu1 - cpu0,
            db_cpu_s=None if db0 is None or db1 is None else db1 - db0,
            bytes_total=fleet.poll_bytes - bytes0,
            versions=target - before,
        )

    async def add_node(self, admin: httpx.AsyncClient) -> list[Agent]:
        agent = make_agent(self.next_index)
        self.next_index += 1
        async with self.fleet.client(None) as client:
            await self.fleet.enroll(client, self.token, agent)
        self.fleet.start(agent)
        return [agent]

    async def delete_node(self, admin: httpx.AsyncClient) -> list[Agent]:
        victim = self.live()[-1]
        await self.fleet.stop(victim)  # a deleted node's agent would only be told 401 from now on
        self.fleet.gone.add(victim.name)
        r = await admin.delete(f"/api/v1/nodes/{victim.name}")
        self.check(r, "delete node")
        return [victim]

    async def change_route(self, admin: httpx.AsyncClient) -> list[Agent]:
        agent = self.live()[0]
        prefix = f"10.{200 + (agent.index >> 8) % 50}.{agent.index & 255}.0/24"
        agent.subnets = [*agent.subnets, prefix]
        async with self.fleet.client(agent.credential) as client:
            r = await client.put("/api/v1/node/subnets", json={"subnets": agent.subnets})
        self.check(r, "put subnets")
        for route in r.json()["routes"]:
            if route["prefix"] == prefix and route["state"] == "pending":
                approved = await admin.post(
                    f"/api/v1/nodes/{agent.name}/routes/approve", json={"prefix": prefix}
                )
                self.check(approved, "approve route")
        return []

    async def change_p2p(self, admin: httpx.AsyncClient) -> list[Agent]:
        a, b = self.live()[0], self.live()[1]
        r = await admin.put(f"/api/v1/pairs/{a.name}/{b.name}", json={"p2p": "off"})
        self.check(r, "set pair")
        return []

    async def measure_steady(self, admin: httpx.AsyncClient) -> None:
        """Reports flowing at the agents' interval for `steady` seconds (and at least one from each agent):
        the coordinator's cores."""
        fleet = self.fleet
        await self.version(admin)
        fleet.resume_reports()
        # One interval to get going (every agent past its first slot), then the window.
        await asyncio.sleep(min(fleet.report_interval, self.steady))
        fleet.report_latencies.clear()
        fleet.heartbeat_latencies.clear()
        fleet.report_sizes.clear()
        ok0, whole0 = fleet.reports_ok, fleet.whole_ok
        self.c.profile_window("on")
        cpu0, db0 = self.cpu()
        t0 = time.monotonic()
        await asyncio.sleep(self.steady)
        # At least a round of reports (one per agent) in the window, however slow the machine.
        await wait_for("a round of reports", lambda: fleet.reports_ok - ok0 >= len(self.live()), self.limit)
        cpu1, db1 = self.cpu()
        wall = time.monotonic() - t0
        self.c.profile_window(f"off {self.result.db}-{self.size}-steady")
        self.result.steady_cores = (cpu1 - cpu0) / wall
        if db0 is not None and db1 is not None:
            self.result.steady_db_cores = (db1 - db0) / wall
        self.result.reports_per_s = (fleet.reports_ok - ok0) / wall
        self.result.whole_per_s = (fleet.whole_ok - whole0) / wall
        self.result.report_latency = Spread.of(fleet.report_latencies)
        self.result.heartbeat_latency = Spread.of(fleet.heartbeat_latencies)
        self.result.report_bytes = statistics.mean(fleet.report_sizes) if fleet.report_sizes else 0.0
        fleet.pause_reports()


# --- the command -----------------------------------------------------------------------------------------


def run_size(
    size: int,
    db: str,
    work: Path,
    *,
    pin: bool = True,
    report_interval: float = REPORT_INTERVAL,
    steady: float = STEADY_SECONDS,
    profile: Path | None = None,
    pg: postgres.ClusterPaths | None = None,
    pg_pid: int | None = None,
    heartbeats: bool = True,
    whole_peers: bool = False,
) -> Result:
    """Measure one size on a fresh database: a SQLite file under `work`, or a new database of `pg`."""
    shares = cores() if pin else None
    if shares is not None:
        os.sched_setaffinity(0, shares[1])
    if pg is not None:
        db_url = postgres.create_database(pg, f"scale_{size}_{os.getpid()}")
    else:
        db_url = f"sqlite:///{work / f'scale-{size}.db'}"
    control = None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        control = profile / f"{db}-{size}.control"
        control.write_text("idle\n")
    coordinator = Coordinator(
        db_url, work / f"coordinator-{db}-{size}.log", core=shares[0] if shares else None, profile=control
    )
    try:
        coordinator.start()
        run = Run(
            coordinator, size, db, report_interval, steady, db_pid=pg_pid, heartbeats=heartbeats,
            whole_peers=whole_peers,
        )  # fmt: skip
        result = asyncio.run(run.run())
    finally:
        coordinator.stop()
    if result.failure is not None or result.server_errors:
        # The work directory goes with the run: keep the coordinator's log of a failed size to read.
        kept = Path(tempfile.gettempdir()) / f"wgmesh-scale-{db}-{size}-{os.getpid()}.log"
        shutil.copyfile(coordinator.log, kept)
        print(f"  coordinator log kept at {kept}", flush=True)
    return result


def fmt(value: float) -> str:
    if value != value:  # NaN: not measured
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"


def table(results: list[Result]) -> str:
    """The figures by size, then the ratios between consecutive sizes."""
    results = sorted(results, key=lambda r: r.size)
    names: list[str] = []
    for r in results:
        names += [n for n in r.figures() if n not in names]
    heads = [f"{r.size} nodes" for r in results]
    ratios = [(a, b) for a, b in itertools.pairwise(results)]
    heads += [f"{b.size}/{a.size}" for a, b in ratios]
    width = max(len(n) for n in names) + 2
    lines = [f"{'':<{width}}" + "".join(f"{h:>12}" for h in heads)]
    for name in names:
        row = [r.figures().get(name, float("nan")) for r in results]
        row += [
            b.figures().get(name, float("nan")) / a.figures()[name]
            if a.figures().get(name, 0.0) > 0
            else float("nan")
            for a, b in ratios
        ]
        lines.append(f"{name:<{width}}" + "".join(f"{fmt(v):>12}" for v in row))
    return "\n".join(lines)


def _interrupted(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--report-interval", type=float, default=REPORT_INTERVAL)
    parser.add_argument("--steady", type=float, default=STEADY_SECONDS, help="seconds of steady state")
    parser.add_argument("--profile", type=Path, help="sample the coordinator's stacks; write the tops here")
    parser.add_argument("--no-pin", action="store_true", help="leave the processes on every core")
    parser.add_argument(
        "--whole-reports",
        action="store_true",
        help="every report whole (no heartbeats), as agents before them",
    )
    parser.add_argument(
        "--whole-peers",
        action="store_true",
        help="whole reports list every peer, as agents before they left out the nominal ones",
    )
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        print(f"--sizes {args.sizes!r} must be numbers separated by commas", file=sys.stderr)
        return 2
    raise_nofile()
    # Stopped by SIGTERM or SIGINT (also when started in the background, where SIGINT is ignored), it
    # unwinds: the finally blocks stop the coordinator and PostgreSQL by PID and remove their directories.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    failed = False
    for db in dbs:
        results: list[Result] = []
        with tempfile.TemporaryDirectory(prefix="wgmesh-scale-") as tmp, contextlib.ExitStack() as stack:
            pg, pg_pid = None, None
            if db == "postgresql":
                pg, proc = stack.enter_context(postgres_cluster())
                pg_pid = proc.pid
            for size in sizes:
                print(f"{db}, {size} nodes:", flush=True)
                try:
                    result = run_size(
                        size, db, Path(tmp), pin=not args.no_pin, report_interval=args.report_interval,
                        steady=args.steady, profile=args.profile, pg=pg, pg_pid=pg_pid,
                        heartbeats=not args.whole_reports, whole_peers=args.whole_peers,
                    )  # fmt: skip
                except Failed as exc:
                    print(f"  FAILED: {exc}", flush=True)
                    failed = True
                    break
                results.append(result)
                if result.failure is not None:
                    print(f"  FAILED: {result.failure}", flush=True)
                    failed = True
                if result.errors:
                    print(
                        "  error answers: " + ", ".join(f"{k}: {n}" for k, n in sorted(result.errors.items()))
                    )
                if result.retried:
                    print(
                        "  retried once: " + ", ".join(f"{k}: {n}" for k, n in sorted(result.retried.items()))
                    )
                if result.server_errors:
                    failed = True
                if result.failure is not None:
                    break  # a larger size would fail the same way, only slower
        if results:
            reports = "every report whole" if args.whole_reports else "heartbeats between whole reports"
            reports += ", every peer listed" if args.whole_peers else ", nominal peers left out above 50"
            print(f"\n{db}: netmap by {results[0].endpoint}, reports every {args.report_interval:g} s "
                  f"({reports}), steady state {args.steady:g} s")  # fmt: skip
            print(table(results), flush=True)
            print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
