"""The HTTP server: uvicorn, with the two limits it lacks for clients that are slow or idle.

uvicorn times out a connection only between two requests (keep-alive). A client that
connects and sends nothing, or sends half a request and stalls, is held forever, and enough
of them exhaust the gateway's file descriptors, which it needs for its own calls to the
scoring server. So:

- **Read deadline:** a client has `GATEWAY_REQUEST_READ_TIMEOUT` seconds, from connecting or
  from its previous answer, to send a complete request (headers and body); then the
  connection is closed. Trickling bytes does not extend it. A request being answered has no
  deadline here (the scoring deadline is the scorer's).
- **Connection limit:** at most `GATEWAY_MAX_CLIENT_CONNECTIONS` are open (and never more
  than the open-file limit leaves room for). A new connection over the limit makes room by
  closing one that is waiting for a request: first those that never sent a whole one, the
  oldest first, then idle keep-alive connections. A connection whose request is being
  answered is never closed; only when all are busy is the newcomer closed. So idle
  connections cannot lock out clients that send requests.
- **Header size:** a request line and headers over 64 KiB get 431 and the connection is
  closed (uvicorn's httptools parser has no limit of its own).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.settings import Settings

log = logging.getLogger("gateway.server")

# File descriptors kept for everything but client connections: the scoring-server pool,
# the registry client, logs, the scoring servers' pipes.
RESERVED_FDS = 256
MAX_HEADER_BYTES = 64 * 1024
_TOO_LARGE = json.dumps({"detail": "Request headers exceed 64 KiB."}).encode()
HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TOO_LARGE), _TOO_LARGE)
)


class BoundedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with a read deadline and a shared connection limit."""

    read_timeout = 10.0
    max_connections = 1000
    _warned_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._answering = 0  # complete requests not yet answered: never closed for room
        self._answered = 0
        # Of the request being read, until its headers are complete (then None).
        self._header_bytes: int | None = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_since = 0.0
        super().connection_made(transport)
        self._arm()
        if len(self.connections) > connection_limit(self.max_connections):
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        reading_headers = self._header_bytes is not None
        super().data_received(data)
        if not reading_headers or self._header_bytes is None or self.transport.is_closing():
            return  # headers were complete before, or are now (the rest is body)
        self._header_bytes += len(data)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._disarm()
            self.transport.write(HEADERS_TOO_LARGE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._header_bytes = None
        super().on_headers_complete()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._deadline is None:  # a pipelined request behind one being answered
            self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._answering += 1

    def on_response_complete(self) -> None:
        self._answering = max(0, self._answering - 1)
        self._answered += 1
        super().on_response_complete()
        if not self._answering and not self.transport.is_closing():
            self._arm()  # waiting for the next request on this connection

    def _arm(self) -> None:
        self._disarm()
        self._waiting_since = self.loop.time()
        self._deadline = self.loop.call_later(self.read_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self._answering and not self.transport.is_closing():
            self.transport.close()

    def _waiting(self) -> bool:
        return not self._answering and not self.transport.is_closing()

    def _make_room(self) -> None:
        """Close a waiting connection: one that never sent a whole request first (a client
        that does is likely to send another), the oldest first; this one if none waits."""
        waiting = [
            other
            for other in self.connections
            if isinstance(other, BoundedHttp) and other is not self and other._waiting()
        ]
        victim = min(
            waiting, key=lambda other: (other._answered > 0, other._waiting_since), default=self
        )
        now = time.monotonic()
        if now - BoundedHttp._warned_at > 60:
            BoundedHttp._warned_at = now
            log.warning(
                "%d client connections open (limit %d): closing those that wait longest",
                len(self.connections),
                connection_limit(self.max_connections),
            )
        victim._disarm()
        victim.transport.close()


def connection_limit(configured: int) -> int:
    """The configured limit, lowered to what the open-file limit leaves room for (read each
    time: the limit can be changed while the gateway runs, e.g. with prlimit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - RESERVED_FDS))


def bounded_protocol(settings: Settings) -> type[BoundedHttp]:
    limit = connection_limit(settings.max_client_connections)
    if limit < settings.max_client_connections:
        log.warning("client connections limited to %d by the open-file limit (ulimit -n)", limit)
    return type(
        "BoundedHttp",
        (BoundedHttp,),
        {
            "read_timeout": settings.request_read_timeout,
            "max_connections": settings.max_client_connections,
        },
    )


def serve(app, settings: Settings) -> None:
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        http=bounded_protocol(settings),
        log_config=None,
        access_log=False,
    )
