"""Files that hold secrets: written like wg-quick does (umask 077, temp file, fsync, rename)."""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
from pathlib import Path

from wgmesh.logs import kv

log = logging.getLogger("wgmesh.files")


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) with mode 0700, and tighten it if it exists looser."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)


def write_private(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Atomically give `path` the contents `data`, mode 0600, durable across a crash.

    The parent must exist (the caller decides whether it is a private directory). With
    `replace=False` an existing `path` is never replaced: the last step is a hard link, which fails
    with FileExistsError if `path` appeared meanwhile.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        elif _link_new(tmp, path):
            os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _link_new(tmp: str, path: Path) -> bool:
    """Give `tmp` the name `path` unless that exists; True if `tmp` is still there to remove."""
    try:
        os.link(tmp, path)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
            raise
        # A filesystem without hard links: check, then rename (a small race, but no clobbering
        # of a file that was there before the command started).
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from exc
        os.rename(tmp, path)
        return False


def create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists, whatever the umask; tighten an existing one.

    For files another library writes (SQLite's database: it creates a missing one 0644 under umask 022,
    and gives its -wal and -shm files the database's own mode).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(mode & 0o700)
            log.warning(
                "secret file was readable by others: tightened", extra=kv(path=str(path), mode=oct(mode))
            )
        return
    try:
        os.fchmod(fd, 0o600)  # exactly: a umask such as 0277 would leave the owner unable to write
    finally:
        os.close(fd)


def read_private(path: Path) -> bytes | None:
    """Read a secret file, or None if absent; warns when others may read it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    if mode & 0o077:
        log.warning("secret file is readable by others", extra=kv(path=str(path), mode=oct(mode)))
    return path.read_bytes()
