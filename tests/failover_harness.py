"""Two coordinators of one registry (two real processes on one PostgreSQL database), and a proxy that
loses answers: what the failover tests of the agent (tests/api) and the CLI (tests/cli) run on."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from coordinator_harness import Coordinator, running
from pg_harness import Cluster


@dataclass
class Pair:
    a: Coordinator
    b: Coordinator


@contextmanager
def coordinators(cluster: Cluster, tmp_path: Path, *extra: str) -> Iterator[Pair]:
    """Two coordinators on a fresh database of `cluster`: a test may kill them, nothing else uses them."""
    with cluster.database() as url:
        a = Coordinator(db=tmp_path / "unused-a.db", log=tmp_path / "a.log", database=url, extra=extra)
        b = Coordinator(db=tmp_path / "unused-b.db", log=tmp_path / "b.log", database=url, extra=extra)
        with running(a), running(b):
            yield Pair(a, b)


class AnswerDropper(threading.Thread):
    """A TCP proxy to `upstream` that passes each request on and, once the answer begins (the
    coordinator has committed), drops it and closes the client's connection: an answer lost on the way.
    Plain HTTP only (a coordinator with --insecure-http): it reads where the answer begins."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.dropped = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                with client, socket.create_connection(self.upstream) as up:
                    pipe = threading.Thread(target=_pipe, args=(client, up), daemon=True)
                    pipe.start()
                    if up.recv(1):  # the answer has begun: lose it
                        self.dropped += 1
                    # shutdown, not only close: the pipe thread still holds the socket in recv
                    client.shutdown(socket.SHUT_RDWR)
                    up.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> AnswerDropper:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
