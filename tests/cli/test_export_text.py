"""wgmesh.cli.export.wg_quick_text: the wg-quick text of a static peer, read back with wgconfig."""

from __future__ import annotations

import time
from pathlib import Path

from wgconfig import WGConfig

from wgmesh import keys
from wgmesh.cli.export import wg_quick_text
from wgmesh.models import WgQuickConfig, WgQuickInterface, WgQuickPeer


def config(peers: int) -> WgQuickConfig:
    return WgQuickConfig(
        node="dev",
        interface=WgQuickInterface(
            private_key=keys.generate_keypair().private_key, address=["100.96.9.9/32"], listen_port=51820
        ),
        peers=[
            WgQuickPeer(
                name=f"gw-{i}",
                public_key=keys.generate_keypair().public_key,
                preshared_key=keys.generate_psk() if i % 2 else None,
                allowed_ips=[f"100.96.{i // 250}.{i % 250 + 1}/32", f"10.{i // 250}.{i % 250}.0/24"],
                endpoint=f"198.51.100.{i % 250 + 1}:51820" if i % 3 else None,
                persistent_keepalive=25 if i % 3 else None,
            )
            for i in range(peers)
        ],
    )


def read_back(text: str, tmp_path: Path) -> WGConfig:
    path = tmp_path / "dev.conf"
    path.write_text(text)
    wc = WGConfig(str(path))
    wc.read_file()
    return wc


def test_every_field_reads_back(tmp_path: Path) -> None:
    cfg = config(6)
    wc = read_back(wg_quick_text(cfg), tmp_path)
    iface = wc.get_interface()
    assert (iface["PrivateKey"], iface["Address"], iface["ListenPort"]) == (
        cfg.interface.private_key,
        "100.96.9.9/32",
        51820,
    )
    peers = wc.get_peers(keys_only=False)
    assert list(peers) == [p.public_key for p in cfg.peers]  # in order
    for p in cfg.peers:
        got = peers[p.public_key]
        assert got["AllowedIPs"] == [str(ip) for ip in p.allowed_ips]
        assert got.get("PresharedKey") == p.preshared_key
        assert got.get("Endpoint") == (str(p.endpoint) if p.endpoint else None)
        assert got.get("PersistentKeepalive") == p.persistent_keepalive


def test_a_thousand_peers_take_well_under_a_second(tmp_path: Path) -> None:
    cfg = config(1000)
    started = time.perf_counter()
    text = wg_quick_text(cfg)
    assert time.perf_counter() - started < 1.0
    assert len(read_back(text, tmp_path).get_peers()) == 1000
