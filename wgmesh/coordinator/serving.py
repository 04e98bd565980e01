"""uvicorn's server and HTTP/1.1 protocol, with two changes at shutdown.

`Server` tells the application first (`on_stop`: the ChangeNotifier wakes every held long-poll and event
stream, which then answer at once): uvicorn waits, up to GRACEFUL_SHUTDOWN, for every request in
progress, and a long-poll with nothing new would have held the stop up for all of it (5 s at each stop
of a coordinator with agents, 2 s of each lab's teardown, and as long again before an agent of a cluster
moved to another coordinator).

`HttpProtocol`, on TLS connections:

At SIGTERM uvicorn closes each idle keep-alive connection, and waits (up to GRACEFUL_SHUTDOWN) until every
connection is gone. Closing a TLS connection sends close_notify and waits for the client's, which a client
holding the connection idle in its pool (an agent between polls, an admin's httpx client) does not send
until it next reads: every such client held a stop up for the whole grace period. An idle connection has
nothing left to deliver, so it is dropped at once; a request in progress still finishes as before, and
plain HTTP (--insecure-http, closed at once anyway) is left as uvicorn does it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.on_stop()
        await super().shutdown(sockets)


class HttpProtocol(H11Protocol):
    def shutdown(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self.transport.get_extra_info("sslcontext") is not None:
            self.conn.send(h11.ConnectionClosed())
            self.transport.abort()
        else:
            super().shutdown()
