"""The kernel backend: netlink requests per operation and dump parsing (pure).

The live round trip runs in a real kernel: tests/kernel/test_kernel_dataplane.py (`make test-kernel`).
The planner it shares with the userspace backend is tested in test_plan.py.
"""

from __future__ import annotations

import base64
from typing import Any

from pyroute2.netlink.generic.wireguard import wgmsg

from wgmesh import keys
from wgmesh.agent.plan import AddPeer, RemovePeer, ReplaceAllowedIps, SetEndpoint, SetKeepalive, SetPsk
from wgmesh.agent.system.wireguard_kernel import (
    ALLOWED_IPS_PER_MESSAGE,
    parse_info,
    requests_for,
)
from wgmesh.agent.wgstate import PeerSpec
from wgmesh.values import Endpoint

ep = Endpoint.parse

PEER = keys.generate_keypair().public_key
ZERO = base64.b64encode(bytes(32)).decode()


def test_endpoint_update_has_no_allowed_ips_and_no_replace_flag() -> None:
    (request,) = requests_for([SetEndpoint(PEER, ep("198.18.0.12:51820"))])
    assert request == {
        "peer": {
            "public_key": PEER,
            "update_only": True,
            "endpoint_addr": "198.18.0.12",
            "endpoint_port": 51820,
        }
    }
    (v6,) = requests_for([SetEndpoint(PEER, ep("[fd00::1]:7"))])
    assert (v6["peer"]["endpoint_addr"], v6["peer"]["endpoint_port"]) == ("fd00::1", 7)


def test_add_peer_and_long_allowed_ip_lists_are_chunked() -> None:
    ips = tuple(f"10.{i // 256}.{i % 256}.0/24" for i in range(2 * ALLOWED_IPS_PER_MESSAGE + 1))
    spec = PeerSpec(PEER, ips, ep("198.18.0.12:51820"), None, 25)
    requests = requests_for([AddPeer(spec)])
    assert len(requests) == 3
    first = requests[0]["peer"]
    assert first["replace_allowed_ips"] is True and first["preshared_key"] == ZERO
    assert first["persistent_keepalive"] == 25 and first["endpoint_port"] == 51820
    for later in requests[1:]:
        assert later["peer"]["update_only"] is True and "replace_allowed_ips" not in later["peer"]
    assert sum(len(r["peer"]["allowed_ips"]) for r in requests) == len(ips)


def test_updates_and_removal() -> None:
    requests = requests_for(
        [ReplaceAllowedIps(PEER, ()), SetPsk(PEER, None), SetKeepalive(PEER, None), RemovePeer(PEER)]
    )
    assert requests == [
        {"peer": {"public_key": PEER, "update_only": True, "replace_allowed_ips": True, "allowed_ips": []}},
        {"peer": {"public_key": PEER, "update_only": True, "preshared_key": ZERO}},
        {"peer": {"public_key": PEER, "update_only": True, "persistent_keepalive": 0}},
        {"peer": {"public_key": PEER, "remove": True}},
    ]


def _allowed(prefix: str) -> dict[str, Any]:
    addr, length = prefix.split("/")
    return {
        "attrs": [
            ["WGALLOWEDIP_A_FAMILY", 2],
            ["WGALLOWEDIP_A_IPADDR", bytes(int(x) for x in addr.split("."))],
            ["WGALLOWEDIP_A_CIDR_MASK", int(length)],
        ]
    }


def _message(device: list[list[Any]], peers: list[list[list[Any]]]) -> wgmsg:
    """A dump message encoded and decoded by pyroute2, as the kernel's would be."""
    msg = wgmsg()
    msg["cmd"] = 0
    msg["attrs"] = [*device, ["WGDEVICE_A_PEERS", [{"attrs": p} for p in peers]]]
    msg.encode()
    decoded = wgmsg(msg.data)
    decoded.decode()
    return decoded


def test_parse_info_merges_a_peer_continued_in_the_next_message() -> None:
    me = keys.generate_keypair()
    other = keys.generate_keypair().public_key
    psk = keys.generate_psk()
    device = [
        ["WGDEVICE_A_IFNAME", "wg0"],
        ["WGDEVICE_A_PRIVATE_KEY", me.private_key],
        ["WGDEVICE_A_LISTEN_PORT", 51820],
        ["WGDEVICE_A_FWMARK", 0],
    ]
    first = _message(
        device,
        [
            [
                ["WGPEER_A_PUBLIC_KEY", other],
                ["WGPEER_A_PRESHARED_KEY", ZERO],
                ["WGPEER_A_ENDPOINT", {"addr": "198.18.0.13", "port": 51820}],
                ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 0],
                ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 0, "tv_nsec": 0}],
                ["WGPEER_A_RX_BYTES", 0],
                ["WGPEER_A_TX_BYTES", 0],
                ["WGPEER_A_ALLOWEDIPS", [_allowed("100.96.0.3/32")]],
            ],
            [
                ["WGPEER_A_PUBLIC_KEY", PEER],
                ["WGPEER_A_PRESHARED_KEY", psk],
                ["WGPEER_A_ENDPOINT", {"addr": "198.18.0.12", "port": 51821}],
                ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 25],
                ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 1700000000, "tv_nsec": 0}],
                ["WGPEER_A_RX_BYTES", 10],
                ["WGPEER_A_TX_BYTES", 20],
                ["WGPEER_A_ALLOWEDIPS", [_allowed("100.96.0.2/32"), _allowed("10.2.0.0/24")]],
            ],
        ],
    )
    # The kernel continues a peer with only its key and the rest of its allowed IPs.
    second = _message(
        [["WGDEVICE_A_IFNAME", "wg0"]],
        [[["WGPEER_A_PUBLIC_KEY", PEER], ["WGPEER_A_ALLOWEDIPS", [_allowed("10.22.0.0/24")]]]],
    )
    observed = parse_info([first, second])
    assert observed.public_key == me.public_key
    assert observed.spec.listen_port == 51820
    assert observed.spec.peers[PEER] == PeerSpec(
        PEER, ("10.2.0.0/24", "10.22.0.0/24", "100.96.0.2/32"), ep("198.18.0.12:51821"), psk, 25
    )
    assert observed.spec.peers[other] == PeerSpec(
        other, ("100.96.0.3/32",), ep("198.18.0.13:51820"), None, None
    )
    stats = observed.stats[PEER]
    assert (stats.rx_bytes, stats.tx_bytes) == (10, 20)
    assert stats.last_handshake is not None and stats.last_handshake.timestamp() == 1700000000
    assert observed.stats[other].last_handshake is None
