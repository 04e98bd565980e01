"""The agent's state directory: modes, atomic files, corrupt files, the netmap cache."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from wgmesh import keys
from wgmesh.agent.state import Enrollment, StateDir, StateError
from wgmesh.models import NetMap, PeerConfig


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _netmap(version: int) -> NetMap:
    peer = keys.generate_keypair()
    return NetMap(
        version=version,
        node_id=1,
        name="gw1",
        overlay_ip="100.96.0.1",
        overlay_cidr="100.96.0.0/16",
        listen_port=51820,
        p2p="auto",
        peers=[
            PeerConfig(
                node_id=2,
                name="gw2",
                public_key=peer.public_key,
                overlay_ip="100.96.0.2",
                allowed_ips=["100.96.0.2/32", "10.2.0.0/24"],
                psk=keys.generate_psk(),
            )
        ],
    )


def test_directory_and_files_are_private(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.prepare()
    pair = state.private_key()
    state.save_enrollment(Enrollment(7, "wgn_7.secretsecretsecretsecret", "http://198.18.0.1:8080"))
    state.save_netmap(_netmap(3))
    assert _mode(state.path) == 0o700
    for f in (state.key_file, state.enrollment_file, state.netmap_file):
        assert _mode(f) == 0o600, f
    assert keys.public_key_of(state.key_file.read_text().strip()) == pair.public_key
    assert [p.name for p in state.path.iterdir() if p.name.startswith(".")] == []


def test_loose_directory_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "loose"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    StateDir(path).prepare()
    assert _mode(path) == 0o700


def test_key_is_generated_once(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    first = state.private_key()
    assert state.private_key() == first
    assert first.private_key not in repr(first)


def test_enrollment_round_trip_and_repr_hides_credential(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    assert state.enrollment() is None
    enrollment = Enrollment(7, "wgn_7.secretsecretsecretsecret", "http://198.18.0.1:8080")
    state.save_enrollment(enrollment)
    assert state.enrollment() == enrollment
    assert "secret" not in repr(enrollment)


def test_corrupt_files(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.key_file.write_text("not a key\n")
    with pytest.raises(StateError, match="does not hold a valid key"):
        state.private_key()
    state.enrollment_file.write_text("{")
    with pytest.raises(StateError, match="remove it to enroll again"):
        state.enrollment()
    state.netmap_file.write_text('{"version": "x"}')
    assert state.cached_netmap() is None


def test_netmap_cache_round_trip(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    assert state.cached_netmap() is None
    netmap = _netmap(5)
    state.save_netmap(netmap)
    assert state.cached_netmap() == netmap
    state.save_netmap(_netmap(6))
    cached = state.cached_netmap()
    assert cached is not None and cached.version == 6
