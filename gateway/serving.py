"""The HTTP protocol `privaterouter serve` runs: uvicorn's httptools protocol plus a header deadline.

uvicorn times out idle keep-alive connections but not a client that sends a request's headers one
byte at a time (slowloris): each such connection holds a file descriptor forever, and a few hundred
take the server down. Here a request's headers must be complete within `HEADER_TIMEOUT` seconds of
the connection opening (or of the request's first byte on a kept-alive connection); otherwise the
connection is closed. Bodies get their own deadline in `gateway.middleware.edge`, and
`MAX_CONNECTIONS` (uvicorn's `limit_concurrency`) caps what is served at once.

`header_timeout` is set by `gateway.app.app_from_env` in each worker process before it serves
(uvicorn loads the app factory first), because worker processes are spawned, not forked.
"""

from __future__ import annotations

import asyncio
import resource

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

header_timeout = 10.0
DESCRIPTORS_PER_CONNECTION = 2  # the client's socket and, while it streams, its upstream connection
RESERVED_DESCRIPTORS = 64  # database and Redis pools, logs, the journal, listening sockets


def connection_cap(max_connections: int) -> int:
    """The connection cap this process can honour: `max_connections` (MAX_CONNECTIONS), lowered to
    what the open-file limit carries at two descriptors per connection.

    First raises the soft RLIMIT_NOFILE to the hard limit (the workers inherit it): a default soft limit
    of 1,024 would otherwise run out of descriptors below the cap, and uvicorn would fail accepting
    instead of answering 503. Returns a count of connections (≥ 1); never raises.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections * DESCRIPTORS_PER_CONNECTION + RESERVED_DESCRIPTORS
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(1, min(max_connections, (soft - RESERVED_DESCRIPTORS) // DESCRIPTORS_PER_CONNECTION))


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes a connection whose request headers do not arrive in time."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
