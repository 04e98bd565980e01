"""Secret files: mode 0600, atomic, and never clobbered when the caller says so."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from wgmesh.secure_files import ensure_private_dir, read_private, write_private


def test_written_0600_and_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "key"
    write_private(target, b"one")
    write_private(target, b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


def test_without_replace_an_existing_file_stays_and_no_temp_is_left(tmp_path: Path) -> None:
    target = tmp_path / "wg0.conf"
    target.write_bytes(b"the user's own")
    with pytest.raises(FileExistsError):
        write_private(target, b"ours", replace=False)
    assert target.read_bytes() == b"the user's own"
    assert [p.name for p in tmp_path.iterdir()] == ["wg0.conf"]


def test_without_replace_a_new_file_is_written(tmp_path: Path) -> None:
    target = tmp_path / "new.conf"
    write_private(target, b"ours", replace=False)
    assert read_private(target) == b"ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.conf"]


def test_private_dir_is_tightened(tmp_path: Path) -> None:
    loose = tmp_path / "state"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    ensure_private_dir(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
