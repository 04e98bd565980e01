"""`wgmesh export NODE [-o FILE]`: a static peer's wg-quick file, checked with wgconfig and the real
`wg-quick strip`; written with mode 0600, never over an existing file without --force."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_harness import Cli
from coordinator_harness import Coordinator, Enrolled, create_token, enroll, netmap, peers_by_name
from wgconfig import WGConfig

from wgmesh import keys


@pytest.fixture(scope="module")
def mesh(coordinator: Coordinator, admin: httpx.Client) -> dict[str, Any]:
    token = create_token(admin, reusable=True, allow_subnets=["10.0.0.0/8"])["token"]
    with coordinator.anonymous() as anon:
        a = enroll(anon, token, "gw-a", subnets=["10.1.0.0/16"], endpoints=["198.51.100.1:51820"])
        b = enroll(anon, token, "gw-b", subnets=["10.2.0.0/16", "10.1.9.0/24"])  # the /24 conflicts
    r = admin.post("/api/v1/nodes", json={"name": "laptop", "generate_keys": True, "listen_port": 51999})
    assert r.status_code == 201, r.text
    return {"gw-a": a, "gw-b": b, "laptop": r.json()}


def parse(text: str, tmp_path: Path) -> WGConfig:
    path = tmp_path / "parsed.conf"
    path.write_text(text)
    wc = WGConfig(str(path))
    wc.read_file()
    return wc


def as_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def test_export_to_stdout_holds_the_key_address_and_every_peer(
    wgmesh: Cli, coordinator: Coordinator, mesh: dict[str, Any], tmp_path: Path
) -> None:
    r = wgmesh("export", "laptop")
    assert r.code == 0, r.err
    wc = parse(r.out, tmp_path)
    iface = wc.get_interface()
    laptop = mesh["laptop"]
    assert keys.public_key_of(iface["PrivateKey"]) == laptop["public_key"]
    assert iface["Address"] == f"{laptop['overlay_ip']}/32"
    assert iface["ListenPort"] == 51999
    assert iface["MTU"] == 1420  # what the gateways clamp this device's TCP to
    a: Enrolled = mesh["gw-a"]
    b: Enrolled = mesh["gw-b"]
    peers = wc.get_peers(keys_only=False)
    assert set(peers) == {a.keypair.public_key, b.keypair.public_key}
    pa, pb = peers[a.keypair.public_key], peers[b.keypair.public_key]
    assert as_list(pa["AllowedIPs"]) == [f"{a.first_netmap['overlay_ip']}/32", "10.1.0.0/16"]
    assert as_list(pb["AllowedIPs"]) == [
        f"{b.first_netmap['overlay_ip']}/32",
        "10.2.0.0/16",
    ]  # not the conflict
    assert pa["Endpoint"] == "198.51.100.1:51820" and pa["PersistentKeepalive"] == 25
    assert "Endpoint" not in pb and "PersistentKeepalive" not in pb  # gw-b has no endpoint yet
    # The preshared key is the one the gateway holds for this pair.
    assert pa["PresharedKey"] == peers_by_name(netmap(coordinator, a))["laptop"]["psk"]
    assert pb["PresharedKey"] == peers_by_name(netmap(coordinator, b))["laptop"]["psk"]
    assert "# gw-a" in r.out and "# gw-b" in r.out


def test_export_to_a_file_is_mode_0600_and_refuses_to_overwrite(
    wgmesh: Cli, mesh: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "laptop.conf"
    r = wgmesh("export", "laptop", "-o", str(out))
    assert r.code == 0, r.err
    assert f"wrote {out} (mode 0600): static peer laptop, 2 peers" in " ".join(r.out.split())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text() == wgmesh("export", "laptop").out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["laptop.conf"]  # no temp file left

    out.write_text("precious\n")
    r = wgmesh("export", "laptop", "--output", str(out))
    assert r.code == 1
    assert r.one_line_error() == f"wgmesh: {out} exists; pass --force to replace it"
    assert out.read_text() == "precious\n"

    out.chmod(0o644)
    r = wgmesh("export", "laptop", "-o", str(out), "--force")
    assert r.code == 0, r.err
    assert out.read_text().startswith("# wgmesh static peer laptop")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["laptop.conf"]


def test_an_existing_file_is_refused_before_asking_the_coordinator(
    wgmesh: Cli, cli_env: dict[str, str], closed_port: int, tmp_path: Path
) -> None:
    out = tmp_path / "x.conf"
    out.write_text("")
    env = cli_env | {"WGMESH_URL": f"https://127.0.0.1:{closed_port}"}
    r = wgmesh("export", "laptop", "-o", str(out), env=env)
    assert (r.code, "exists" in r.one_line_error()) == (1, True)


def test_export_json(wgmesh: Cli, mesh: dict[str, Any], tmp_path: Path) -> None:
    doc = wgmesh("export", "laptop", "--json").json()
    assert set(doc) == {"node", "interface", "peers"}
    assert set(doc["interface"]) == {"private_key", "address", "listen_port", "mtu"}
    assert keys.public_key_of(doc["interface"]["private_key"]) == mesh["laptop"]["public_key"]
    assert {p["name"] for p in doc["peers"]} == {"gw-a", "gw-b"}
    for p in doc["peers"]:
        assert set(p) == {
            "name",
            "public_key",
            "preshared_key",
            "allowed_ips",
            "endpoint",
            "persistent_keepalive",
        }
    out = tmp_path / "laptop.conf"
    summary = wgmesh("export", "laptop", "-o", str(out), "--json").json()
    assert summary["path"] == str(out) and summary["mode"] == "0600" and summary["node"] == "laptop"
    assert [p["name"] for p in summary["peers"]] == ["gw-a", "gw-b"]
    assert doc["interface"]["private_key"] not in str(summary)


def test_export_refusals(wgmesh: Cli, mesh: dict[str, Any], tmp_path: Path) -> None:
    r = wgmesh("export", "gw-a")
    assert r.code == 2  # the coordinator refuses the input (422): an agent keeps its own key
    assert "holds its own private key; only static peers can be exported" in r.one_line_error()
    r = wgmesh("export", "ghost")
    assert (r.code, r.one_line_error()) == (1, "wgmesh: no node named 'ghost'")
    r = wgmesh("export", "laptop", "-o", str(tmp_path / "missing-dir" / "x.conf"))
    assert r.code == 1
    assert "cannot write" in r.one_line_error()


@pytest.mark.skipif(shutil.which("wg-quick") is None, reason="wg-quick (wireguard-tools) is not installed")
def test_wg_quick_strip_accepts_the_exported_file(wgmesh: Cli, mesh: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "wgx0.conf"
    assert wgmesh("export", "laptop", "-o", str(out)).code == 0
    proc = subprocess.run(
        ["wg-quick", "strip", str(out)], check=False, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert "world accessible" not in proc.stderr  # wg-quick's warning about the file mode
    assert proc.stderr.strip() == ""
    stripped = proc.stdout
    assert "Address" not in stripped  # wg-quick's own key, gone
    for key in ("PrivateKey", "ListenPort = 51999", "PresharedKey", "Endpoint = 198.51.100.1:51820"):
        assert key in stripped, key
    for node in ("gw-a", "gw-b"):
        assert mesh[node].keypair.public_key in stripped
    if shutil.which("wg") is not None:
        # `wg` itself parses the stripped text (no interface needed for a syntax check of the keys).
        for line in stripped.splitlines():
            if line.startswith(("PrivateKey", "PresharedKey")):
                key = line.split("=", 1)[1].strip()
                check = subprocess.run(
                    ["wg", "pubkey"], check=False, input=key, capture_output=True, text=True, timeout=10
                )
                assert check.returncode == 0, check.stderr
