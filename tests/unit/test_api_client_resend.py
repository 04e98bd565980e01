"""A kept-alive connection the server closes as a request goes out on it (its idle timer and the request
crossed, frequent on a loaded coordinator: 13,417 long-polls of the 5,000-node benchmark): the client
sends an idempotent request once more on a new connection, and never a POST.

The server here is a plain socket on loopback that answers the first request of each connection and
closes the connection on the second without a byte, which is what the client sees in that race."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from wgmesh.api_client import ApiClient
from wgmesh.errors import UnreachableError

BODY = b'{"ok": true}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


class ClosingServer:
    """Answers each connection's first request; closes it silently on the second."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            for n in range(2):
                request = self._read(conn)
                if request is None:
                    return
                with self.lock:
                    self.requests.append(request.split(" ", 2)[0])
                if n == 0:
                    conn.sendall(ANSWER)

    @staticmethod
    def _read(conn: socket.socket) -> str | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        while len(body) < length:
            body += conn.recv(65536)
        return head.decode()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[ClosingServer]:
    s = ClosingServer()
    yield s
    s.close()


def client(server: ClosingServer) -> ApiClient:
    return ApiClient(f"http://127.0.0.1:{server.port}", user_agent="test", timeout=10)


def test_an_idempotent_request_is_sent_again_on_a_new_connection(server: ClosingServer) -> None:
    api = client(server)
    try:
        assert api.request("GET", "/one").status_code == 200
        assert api.request("GET", "/two").status_code == 200  # the reused connection closed: sent again
        assert api.request("PUT", "/three", json={}).status_code == 200
    finally:
        api.close()
    assert server.requests == ["GET", "GET", "GET", "PUT", "PUT"]


def test_a_post_is_never_sent_twice(server: ClosingServer) -> None:
    api = client(server)
    try:
        assert api.request("POST", "/one", json={}).status_code == 200
        with pytest.raises(UnreachableError, match="cannot reach the coordinator"):
            api.request("POST", "/two", json={})
    finally:
        api.close()
    assert server.requests == ["POST", "POST"]
