"""Lab sites with a LAN of their own, `--lan I=CIDR` (issue 20: VPCs whose CIDRs overlap): the plan, its
refusals, the record that rebuilds it, and what convergence and the ping matrix make of a shared LAN."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Network, ip_network
from pathlib import Path

import pytest
from cli_harness import run_wgmesh

from wgmesh.cli.lab import _lab_summary, _lans_line
from wgmesh.errors import ValidationError
from wgmesh.lab import Lab, observe, services, up
from wgmesh.lab.converge import GatewayView, Nudge, WgPeer, assess
from wgmesh.lab.layout import (
    LabPlan,
    agent_args,
    build_commands,
    describe_lans,
    parse_lans,
    plan_lab,
    route_table_hook,
    site_commands,
)
from wgmesh.lab.record import LabState, load, save

LAN = IPv4Network("10.1.0.0/24")


def _addresses(plan: LabPlan, index: int) -> tuple[str, str, str]:
    site = plan.site(index)
    return str(site.lan), str(site.gw_lan_ip), str(site.vm_ip)


def test_overlapping_sites_repeat_each_others_addresses_in_their_own_namespaces() -> None:
    plan = plan_lab("wgl", 3, lans={2: LAN})
    assert _addresses(plan, 1) == _addresses(plan, 2) == ("10.1.0.0/24", "10.1.0.1", "10.1.0.10")
    assert _addresses(plan, 3) == ("10.3.0.0/24", "10.3.0.1", "10.3.0.10")
    one, two = plan.site(1), plan.site(2)
    # Everything that names a site apart from its LAN still differs.
    assert (one.gw_ns, one.vm_ns, one.underlay_ip) != (two.gw_ns, two.vm_ns, two.underlay_ip)
    assert plan.shared_lans == {1, 2}
    assert plan_lab("wgl", 3).shared_lans == frozenset()


def test_the_agent_advertises_its_sites_lan_and_the_vpc_host_routes_through_its_gateway() -> None:
    plan = plan_lab("wgl", 3, lans={2: LAN, 3: "192.168.8.0/28"})
    args = agent_args(plan, plan.site(2), "tok", "userspace")
    assert args[args.index("--advertise") + 1] == "10.1.0.0/24"
    args = agent_args(plan, plan.site(3), "tok", "userspace")
    assert args[args.index("--advertise") + 1] == "192.168.8.0/28"
    commands = {(c.netns, c.args) for c in site_commands(plan, plan.site(3))}
    assert ("wgl-gw3", ("addr", "add", "192.168.8.1/28", "dev", "lan")) in commands
    assert ("wgl-vm3", ("addr", "add", "192.168.8.10/28", "dev", "eth0")) in commands
    assert ("wgl-vm3", ("route", "add", "default", "via", "192.168.8.1")) in commands
    # No 10.I.0.0/24 address is left on a site that was given another LAN.
    text = " ".join(" ".join(c.args) for c in build_commands(plan) if c.netns in ("wgl-gw3", "wgl-vm3"))
    assert "10.3." not in text


def test_an_ha_site_with_its_own_lan_puts_both_gateways_on_it() -> None:
    plan = plan_lab("wgl", 2, ha_sites=[2], lans={2: "172.16.4.0/22"})
    site = plan.site(2)
    second = site.second
    assert second is not None
    assert (site.gateway.lan_ip, second.lan_ip, site.vm_ip) == (
        IPv4Address("172.16.4.1"),
        IPv4Address("172.16.4.2"),
        IPv4Address("172.16.4.10"),
    )
    hook = route_table_hook(site, second, "python3")
    assert hook[hook.index("--via") + 1] == "172.16.4.2"
    args = agent_args(plan, second, "tok", "userspace")
    assert args[args.index("--advertise") + 1] == "172.16.4.0/22"


def test_growing_a_lab_keeps_its_lans_and_gives_new_sites_the_default() -> None:
    plan = plan_lab("wgl", 2, lans={2: LAN}).with_sites(3)
    assert [str(s.lan) for s in plan.sites] == ["10.1.0.0/24", "10.1.0.0/24", "10.3.0.0/24"]
    assert plan.with_sites(1).shared_lans == frozenset()


def test_lans_are_described_with_the_sites_they_meet() -> None:
    plan = plan_lab("wgl", 4, lans={2: LAN, 3: "10.4.0.0/16", 4: "192.168.0.0/24"})
    assert describe_lans(plan, [2]) == "vpc2 10.1.0.0/24 (the same as vpc1)"
    assert describe_lans(plan, [3, 4]) == "vpc3 10.4.0.0/16; vpc4 192.168.0.0/24"
    plan = plan_lab("wgl", 3, lans={1: "10.0.0.0/8"})
    assert describe_lans(plan, [1]) == "vpc1 10.0.0.0/8 (overlaps vpc2's 10.2.0.0/24, vpc3's 10.3.0.0/24)"


@pytest.mark.parametrize(
    ("lans", "message"),
    [
        ({4: "10.1.0.0/24"}, "--lan 4=10.1.0.0/24: the lab has sites 1..3"),
        ({0: "10.1.0.0/24"}, "--lan 0=10.1.0.0/24: the lab has sites 1..3"),
        ({2: "fd00:1::/64"}, "--lan 2=fd00:1::/64: a lab LAN must be IPv4"),
        ({2: "10.1.0.5/24"}, "--lan 2: 10.1.0.5/24 has host bits set; did you mean 10.1.0.0/24?"),
        ({2: "10.1.0.0"}, "--lan 2: '10.1.0.0' is not a CIDR prefix (expected ADDRESS/LENGTH)"),
        (
            {2: "10.1.0.0/29"},
            "--lan 2=10.1.0.0/29: too narrow for its VPC host 10.1.0.10 (a lab LAN is a /28 or wider)",
        ),
        (
            {2: "100.64.0.0/24"},
            "--lan 2=100.64.0.0/24: a lab LAN must be inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 "
            "(private space its enrollment token can approve)",
        ),
        ({2: "8.0.0.0/8"}, "--lan 2=8.0.0.0/8: a lab LAN must be inside 10.0.0.0/8, 172.16.0.0/12 or"),
        ({2: "198.18.0.0/24"}, "--lan 2=198.18.0.0/24: overlaps the lab underlay 198.18.0.0/15"),
        ({2: "198.16.0.0/14"}, "--lan 2=198.16.0.0/14: overlaps the lab underlay 198.18.0.0/15"),
        ({2: ip_network("fd00::/64")}, "--lan 2=fd00::/64: a lab LAN must be IPv4"),
    ],
)
def test_the_plan_refuses_a_lan_it_cannot_build(lans: dict[int, object], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        plan_lab("wgl", 3, lans=lans)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_lan"
    assert caught.value.message.startswith(message)
    assert "\n" not in caught.value.message


def test_a_28_still_holds_the_host_and_private_space_reaches_its_edges() -> None:
    plan = plan_lab("wgl", 3, lans={1: "10.255.255.240/28", 2: "172.31.0.0/16", 3: "192.168.0.0/16"})
    assert str(plan.site(1).vm_ip) == "10.255.255.250"
    assert str(plan.site(2).vm_ip) == "172.31.0.10"


def test_parse_lans_takes_repeats_and_comma_lists() -> None:
    assert parse_lans(["2=10.1.0.0/24", "3=192.168.1.0/24,1=172.16.0.0/24"]) == {
        1: IPv4Network("172.16.0.0/24"),
        2: LAN,
        3: IPv4Network("192.168.1.0/24"),
    }
    assert parse_lans([]) == {}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["2=10.1.0.0/24", "2=10.3.0.0/24"], "--lan: site 2 is given twice (10.1.0.0/24 and 10.3.0.0/24)"),
        (["2=10.1.0.0/24,2=10.1.0.0/24"], "--lan: site 2 is given twice (10.1.0.0/24 and 10.1.0.0/24)"),
        (["10.1.0.0/24"], "--lan '10.1.0.0/24' must be SITE=CIDR, e.g. 2=10.1.0.0/24"),
        (["x=10.1.0.0/24"], "--lan 'x=10.1.0.0/24' must be SITE=CIDR, e.g. 2=10.1.0.0/24"),
        (["2="], "--lan '2=' must be SITE=CIDR, e.g. 2=10.1.0.0/24"),
        (["201=10.1.0.0/24"], "--lan 201=10.1.0.0/24: site 201 is not between 1 and 200"),
        (["2=10.1.0.9/24"], "--lan 2: 10.1.0.9/24 has host bits set; did you mean 10.1.0.0/24?"),
        (["2=bogus/24"], "--lan 2: 'bogus/24' is not a valid CIDR prefix"),
    ],
)
def test_parse_lans_refuses_with_one_line(items: list[str], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_lans(items)
    assert caught.value.code == "invalid_lan"
    assert caught.value.message == message


def test_up_refuses_a_bad_lan_before_touching_anything() -> None:
    # Refused before the root check and before any state is written, so this runs anywhere.
    with pytest.raises(ValidationError, match=r"^--lan 3=10\.1\.0\.0/24: the lab has sites 1\.\.2$"):
        up("zq", 2, lans={3: "10.1.0.0/24"})


def _state(**extra: object) -> LabState:
    return LabState(
        name="wgl",
        slot=0,
        loopback_port=8080,
        sites=3,
        backend="userspace",
        agents=True,
        admin_token="t",
        **extra,
    )


def test_the_record_keeps_the_lans_and_rebuilds_the_same_plan(tmp_path: Path) -> None:
    state = _state(lans={2: LAN})
    save(state, tmp_path)
    assert '"2": "10.1.0.0/24"' in (tmp_path / "wgl" / "state.json").read_text()
    again = load("wgl", tmp_path)
    assert again is not None
    assert again.lans == {2: LAN}
    assert again.plan() == plan_lab("wgl", 3, lans={2: LAN}) == state.plan()
    assert again.plan().site(2).vm_ip == IPv4Address("10.1.0.10")


def test_a_record_written_before_lans_reads_as_before() -> None:
    old = _state().model_dump(mode="json", exclude={"lans"})
    assert "lans" not in old
    before = LabState.model_validate(old)
    assert before.lans == {}
    assert before.plan() == plan_lab("wgl", 3)


def test_a_record_holding_a_bad_lan_is_refused_by_the_plan() -> None:
    state = LabState.model_validate({**_state().model_dump(mode="json"), "lans": {"2": "8.8.8.0/24"}})
    with pytest.raises(ValidationError, match="private space"):
        state.plan()


class _Tokens:
    """The admin client's token creation, remembered instead of sent."""

    def __init__(self) -> None:
        self.allowed: dict[str, list[str]] = {}

    def create_token(self, description: str, allow_subnets: Sequence[object] = ()) -> str:
        self.allowed[description] = [str(p) for p in allow_subnets]
        return f"token {len(self.allowed)}"


def test_each_sites_token_approves_the_lan_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = _Tokens()

    @contextmanager
    def client(_state: LabState) -> Iterator[_Tokens]:
        yield tokens

    monkeypatch.setattr(services, "admin_client", client)
    monkeypatch.setattr(services, "save", lambda _state: None)
    state = _state(lans={2: LAN, 3: IPv4Network("192.168.8.0/28")}, ha_sites=[3])
    plan = state.plan()
    for gateway in plan.gateways:
        services._enroll_token(state, gateway)
    # Its own LAN exactly, whatever --lan made it: approved with no manual step, and no wider than that
    # (a site sharing site 1's LAN gets that LAN: the coordinator, not the token, keeps its claim out).
    assert tokens.allowed == {
        "lab wgl gw1": ["10.1.0.0/24"],
        "lab wgl gw2": ["10.1.0.0/24"],
        "lab wgl gw3": ["192.168.8.0/28"],
        "lab wgl gw3b": [],
    }


def _peer(key: str, *nets: str, handshake: int = 1) -> WgPeer:
    return WgPeer(key, None, tuple(ip_network(n) for n in nets), handshake, 0, 0)


SHARED = plan_lab("wgl", 3, lans={2: LAN})
KEYS = {"gw1": "k1", "gw2": "k2", "gw3": "k3"}
OVERLAY = {"gw1": "100.96.0.1/32", "gw2": "100.96.0.2/32", "gw3": "100.96.0.3/32"}


def _overlapping_mesh(handshake: int = 1) -> dict[str, GatewayView]:
    """Sites 1 and 2 share 10.1.0.0/24: the coordinator routes it to gw1 only (gw2's claim is a conflict)."""
    routes = {"gw1": ("10.1.0.0/24",), "gw2": (), "gw3": ("10.3.0.0/24",)}
    return {
        node: GatewayView(
            peers=tuple(
                _peer(KEYS[other], OVERLAY[other], *routes[other], handshake=handshake)
                for other in KEYS
                if other != node
            ),
            public_key=KEYS[node],
        )
        for node in KEYS
    }


def test_sites_sharing_a_lan_converge_on_peers_and_handshakes_alone() -> None:
    verdict = assess(SHARED, _overlapping_mesh())
    assert verdict.converged, verdict.pending
    assert verdict.summary == "peers 6/6, handshakes 6/6"


def test_a_unique_lan_is_still_checked_next_to_shared_ones() -> None:
    views = _overlapping_mesh()
    gw1 = views["gw1"]
    # gw1 loses site 3's route: still pending, as on a lab without --lan.
    views["gw1"] = GatewayView(
        peers=tuple(p if p.public_key != "k3" else _peer("k3", OVERLAY["gw3"]) for p in gw1.peers),
        public_key="k1",
    )
    verdict = assess(SHARED, views)
    assert verdict.pending == ("gw1 routes 10.3.0.0/24 to no gateway of vpc3",)


def test_a_shared_lan_never_stands_in_for_its_gateways_key() -> None:
    # Without gw2's own view (so no key), the peer carrying 10.1.0.0/24 is gw1, not gw2.
    views = _overlapping_mesh()
    views["gw2"] = GatewayView(error="no WireGuard interface")
    verdict = assess(SHARED, views)
    assert "gw3 has no peer for gw2 (10.1.0.0/24)" in verdict.pending


def test_sites_sharing_a_lan_are_nudged_at_their_overlay_address() -> None:
    verdict = assess(SHARED, _overlapping_mesh(handshake=0))
    nudges = set(verdict.nudge)
    # gw2's LAN address 10.1.0.1 is gw1's own, and from gw3 it would reach gw1.
    assert Nudge("gw1", "gw2", "100.96.0.2") in nudges
    assert Nudge("gw2", "gw1", "100.96.0.1") in nudges
    assert Nudge("gw3", "gw2", "100.96.0.2") in nudges
    # A site of its own is still nudged at its LAN address.
    assert Nudge("gw1", "gw3", "10.3.0.1") in nudges


def test_the_ping_matrix_leaves_out_hosts_whose_lan_is_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    pinged: list[tuple[str, str]] = []

    def fake_ping(netns: str, address: object, count: int, wait: float) -> subprocess.Popen[str]:
        pinged.append((netns, str(address)))
        return subprocess.Popen(
            [sys.executable, "-c", "print('rtt min/avg/max/mdev = 1.0/1.5/2.0/0.1 ms')"],
            stdout=subprocess.PIPE,
            text=True,
        )

    monkeypatch.setattr(observe, "_ping", fake_ping)
    # vm1 and vm2 are both 10.1.0.10: neither is pinged (vm1 would answer itself) nor pings (the reply to
    # 10.1.0.10 goes to whichever site holds the prefix).
    matrix = observe.ping_matrix(plan_lab("wgl", 4, lans={2: LAN}))
    assert matrix == {(3, 4): 1.5, (4, 3): 1.5}
    assert sorted(pinged) == [("wgl-vm3", "10.4.0.10"), ("wgl-vm4", "10.3.0.10")]


def test_a_site_overlapping_an_earlier_one_starts_once_that_one_has_enrolled() -> None:
    def waves(plan: LabPlan) -> list[list[int]]:
        return [[s.index for s in wave] for wave in plan.agent_waves]

    assert waves(plan_lab("wgl", 3)) == [[1, 2, 3]]
    assert waves(plan_lab("wgl", 4, lans={2: LAN})) == [[1, 3, 4], [2]]
    # Three sharing one LAN rank in their order; a wider LAN overlapping two disjoint ones comes after both.
    assert waves(plan_lab("wgl", 4, lans={2: LAN, 4: LAN})) == [[1, 3], [2], [4]]
    assert waves(plan_lab("wgl", 3, lans={3: "10.0.0.0/14"})) == [[1, 2], [3]]
    assert waves(plan_lab("wgl", 3, lans={1: "10.0.0.0/14"})) == [[1], [2, 3]]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--lan", "2"), "--lan '2' must be SITE=CIDR"),
        (("--lan", "2=10.1.0.1/24"), "did you mean 10.1.0.0/24?"),
        (("--lan", "2=10.1.0.0/24", "--lan", "2=10.2.0.0/24"), "site 2 is given twice"),
        (("--sites", "2", "--lan", "3=10.1.0.0/24"), "--lan 3=10.1.0.0/24: the lab has sites 1..2"),
        (("--lan", "2=203.0.113.0/24"), "private space"),
    ],
)
def test_bad_lan_flags_are_one_line_and_exit_2(args: tuple[str, ...], needle: str) -> None:
    done = run_wgmesh("lab", "up", "--name", "zq", *args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert needle in done.stderr


def test_up_says_which_lans_were_given_and_what_they_meet() -> None:
    lab = Lab(_state(lans={2: LAN}))
    summary = _lab_summary(lab, 1.0)
    assert summary["lans"] == {2: "10.1.0.0/24"}
    sites = summary["sites"]
    assert isinstance(sites, list)
    assert [(s["gateway"], s["lan"], s["host_ip"]) for s in sites] == [
        ("gw1", "10.1.0.0/24", "10.1.0.10"),
        ("gw2", "10.1.0.0/24", "10.1.0.10"),
        ("gw3", "10.3.0.0/24", "10.3.0.10"),
    ]
    assert _lans_line(lab.plan, [2]) == "vpc2 10.1.0.0/24 (the same as vpc1)"
    assert _lans_line(lab.plan, []) is None
