"""Deadlines and bounds on the web server's connections: a request head in time, no idle forever.

aiohttp (3.14) gives three of the bounds as options of its request handler, set by
:func:`handler_options`: the request line, each header line and the number of headers
(a request past them is answered 400 and its connection closed), and ``keepalive_timeout``,
here ``web.idle_timeout_seconds``, after which a connection with no request in progress is
closed. It has no deadline for *reading a request head*: a client that sends one header line
every few seconds (slowloris) holds its connection for as long as it likes.

:class:`HeaderDeadlines` adds that deadline as a thin wrapper around aiohttp's protocol (no
private attribute is touched): a request head must be complete within
``web.header_timeout_seconds`` of the connection opening (first request) or of its first byte
(later requests on a kept-alive connection). Otherwise the gateway answers ``408 Request
Timeout`` (when the client had sent something) and closes that connection, with a log line.
The application's outermost middleware tells the guard when a head has been read (the request
reached the app) and when the request is done; a WebSocket stays "in a request" for its life
and is bounded by its own heartbeat.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from gateway.limits import TokenBuckets

log = logging.getLogger(__name__)

MAX_REQUEST_LINE_BYTES = 8190
"""Longest request line (method, target, version). Apache's LimitRequestLine and aiohttp's default."""
MAX_HEADER_FIELD_BYTES = 8190
"""Longest header line. Apache's LimitRequestFieldSize; a browser's cookie header stays far below."""
MAX_HEADERS = 64
"""Header lines per request. Browsers send about 20 and each proxy adds a few; with the line
bound this caps a head at about 512 KiB, and the header deadline caps how long it may take."""
_TIMEOUT_TEXT = b"request head not received in time\n"
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(_TIMEOUT_TEXT), _TIMEOUT_TEXT))

TIMEOUT_LOGS_PER_MINUTE = 6
"""Log lines about cut connections per peer address: a thousand slow connections must not
become a thousand log lines (``voicegw_http_header_timeouts_total`` counts every one)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def handler_options(idle_timeout_seconds: float) -> dict[str, Any]:
    """aiohttp request-handler options (``web.AppRunner(app, **options)``) for these bounds."""
    return {"keepalive_timeout": idle_timeout_seconds, "max_line_size": MAX_REQUEST_LINE_BYTES,
            "max_field_size": MAX_HEADER_FIELD_BYTES, "max_headers": MAX_HEADERS}


class _Phase(enum.Enum):
    HEAD = "head"        # waiting for a complete request head: the deadline runs
    REQUEST = "request"  # the application has the request (or the WebSocket)
    IDLE = "idle"        # between requests: aiohttp's idle timeout applies


class _GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the header deadline around it."""

    def __init__(self, inner: asyncio.Protocol, guard: "HeaderDeadlines") -> None:
        self.inner = inner
        self.guard = guard
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.phase = _Phase.HEAD
        self.received = 0
        self.timer: asyncio.TimerHandle | None = None

    # --- asyncio protocol, passed through ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        self.guard.connections[transport] = self
        self._await_head()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.phase is _Phase.IDLE:
            self._await_head()
        if self.phase is _Phase.HEAD:
            self.received += len(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self.guard.connections.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # --- the deadline --------------------------------------------------------------------------
    def head_read(self) -> None:
        """The request reached the application: its head is complete."""
        self._cancel()
        self.phase = _Phase.REQUEST

    def request_done(self) -> None:
        self.phase = _Phase.IDLE

    def _await_head(self) -> None:
        self._cancel()
        self.phase = _Phase.HEAD
        self.received = 0
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.guard.header_timeout, self._expire)

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        self.timer = None
        transport = self.transport
        if self.phase is not _Phase.HEAD or transport is None or transport.is_closing():
            return
        self.guard.timed_out += 1
        if self.guard.metrics is not None:
            self.guard.metrics.inc("voicegw_http_header_timeouts_total")
        host = str(self.peer[0]) if isinstance(self.peer, tuple) and self.peer else str(self.peer)
        if self.guard.logs.take(host):
            log.warning("web connection from %s: no complete request head within %.1f s (%d bytes received); "
                        "closed", self.peer, self.guard.header_timeout, self.received)
        if self.received:
            transport.write(TIMEOUT_RESPONSE)
        transport.close()


class HeaderDeadlines:
    """The header deadline for every connection of one web server."""

    def __init__(self, header_timeout: float, *, metrics: Any = None) -> None:
        self.header_timeout = header_timeout
        self.metrics = metrics
        self.connections: dict[asyncio.BaseTransport | None, _GuardedConnection] = {}
        self.timed_out = 0
        self.logs = TokenBuckets(TIMEOUT_LOGS_PER_MINUTE, clock=time.monotonic)

    def wrap(self, protocol: asyncio.Protocol) -> asyncio.Protocol:
        """Put the deadline around one connection's protocol."""
        return _GuardedConnection(protocol, self)

    def middleware(self) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        """The outermost middleware: tells the guard when a request head was read and when the
        request is done."""

        @web.middleware
        async def mark(request: web.Request, handler: Handler) -> web.StreamResponse:
            conn = self.connections.get(request.transport)
            if conn is None:
                return await handler(request)
            conn.head_read()
            try:
                return await handler(request)
            finally:
                conn.request_done()

        return mark


class GuardedSockSite(web.SockSite):
    """A :class:`aiohttp.web.SockSite` whose connections carry the header deadline."""

    def __init__(self, runner: web.BaseRunner, sock: Any, deadlines: HeaderDeadlines, **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self._deadlines = deadlines

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: self._deadlines.wrap(server()), sock=self._sock,
                                                ssl=self._ssl_context, backlog=self._backlog)
