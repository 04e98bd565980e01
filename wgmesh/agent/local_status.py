"""The agent's unix socket: its peer view for `wgmesh-agent status`, even while the coordinator is down.

Each connection gets one JSON document and is closed; there is nothing to send to the agent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path

import pydantic

from wgmesh.errors import WgmeshError
from wgmesh.logs import kv
from wgmesh.models import LocalStatus

log = logging.getLogger("wgmesh.agent.local")

SOCKET_NAME = "agent.sock"


class AgentNotRunning(WgmeshError):
    """No agent answers on the socket."""

    code = "agent_not_running"


class LocalStatusServer:
    """Serves `snapshot()` as JSON on a 0600 unix socket in the state directory."""

    def __init__(self, path: Path, snapshot: Callable[[], LocalStatus]) -> None:
        self.path = path
        self.snapshot = snapshot
        self._server: socketserver.UnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (replacing a stale socket) and serve in a daemon thread."""
        snapshot = self.snapshot

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    body = snapshot().model_dump_json().encode()
                except Exception:  # a status read must never take the agent down
                    log.exception("local status failed")
                    body = b'{"error": "status unavailable"}'
                self.request.sendall(body)

        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        finally:
            os.umask(old)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-status", daemon=True)
        self._thread.start()
        log.info("local status socket", extra=kv(path=str(self.path)))

    def stop(self) -> None:
        """Stop serving and remove the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def read_local_status(path: Path, timeout: float = 5.0) -> LocalStatus:
    """Ask the agent listening on `path` for its status."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise AgentNotRunning(f"no agent is running (nothing answers on {path})") from exc
    except OSError as exc:
        raise AgentNotRunning(f"cannot read agent status from {path}: {exc}") from exc
    try:
        return LocalStatus.model_validate_json(b"".join(chunks))
    except pydantic.ValidationError as exc:
        raise AgentNotRunning(f"the agent on {path} sent an unreadable status") from exc
