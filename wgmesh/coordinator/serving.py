"""uvicorn's HTTP/1.1 protocol with one change at shutdown, on TLS connections.

At SIGTERM uvicorn closes each idle keep-alive connection, and waits (up to GRACEFUL_SHUTDOWN) until every
connection is gone. Closing a TLS connection sends close_notify and waits for the client's, which a client
holding the connection idle in its pool (an agent between polls, an admin's httpx client) does not send
until it next reads: every such client held a stop up for the whole grace period. An idle connection has
nothing left to deliver, so it is dropped at once; a request in progress still finishes as before, and
plain HTTP (--insecure-http, closed at once anyway) is left as uvicorn does it.
"""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HttpProtocol(H11Protocol):
    def shutdown(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self.transport.get_extra_info("sslcontext") is not None:
            self.conn.send(h11.ConnectionClosed())
            self.transport.abort()
        else:
            super().shutdown()
