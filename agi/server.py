"""An asyncio FastAGI server with routes, around :mod:`agi.protocol`.

``AGI(agi://host:4573/voicebot?lang=en,arg1)`` reaches the route ``voicebot``: the route is
``agi_network_script`` without its query string. A route is ``async def route(agi: AgiSession)``.

Bounds: the environment must arrive within ``read_timeout`` and fit ``max_env_lines`` /
``max_env_bytes``; every command waits at most ``command_timeout`` seconds for its answer
unless the call says otherwise (``EXEC AudioSocket`` lasts as long as the call: pass
``timeout=None``). A failure ends one connection with one log line naming the channel.

When a route returns, the server half-closes the socket and reads what Asterisk still sends
(a ``HANGUP`` line, then EOF) for at most one second, as a recorded real session does.

At most ``max_sessions`` routes run at once. A connection past it is refused: its environment
is read (bounded as above: Asterisk sends it before it reads any command, and it names the
channel in the log line), ``busy_route`` runs if one is given (the gateway's sets
``VOICEGW_STATUS=busy`` for the dialplan), and the server closes as after a route, so
``AGI()`` returns and the dialplan goes on. As many connections again may wait to be refused;
past that they are closed without a word. Refusals are counted (``sessions_refused``, and
``voicegw_sessions_refused_total{server="fastagi"}`` once :meth:`FastAgiServer.register_metrics`
has attached the gateway's metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Awaitable, Callable

from agi.protocol import (
    MAX_ENV_BYTES,
    MAX_ENV_LINES,
    AgiConnection,
    AgiEnvironment,
    ProtocolError,
    Quoted,
    Response,
)

log = logging.getLogger(__name__)

READ_CHUNK = 4096
CLOSE_GRACE_SECONDS = 1.0
DEFAULT_COMMAND_TIMEOUT = 120.0
DEFAULT_MAX_SESSIONS = 100
"""Routes running at once; each voicebot call holds one for its whole length."""


class AgiError(Exception):
    """A command failed (510 unknown command, 520 usage, a timeout, or a closed connection)."""

    def __init__(self, message: str, response: Response | None = None):
        super().__init__(message)
        self.response = response


class ChannelHungUp(AgiError):
    """The channel is gone (511 dead channel, or the connection closed)."""


Route = Callable[["AgiSession"], Awaitable[None]]
_DEFAULT = object()


class AgiSession:
    """One FastAGI call: the environment and one-command-at-a-time helpers."""

    def __init__(self, env: AgiEnvironment, conn: AgiConnection, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, command_timeout: float):
        self.env = env
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.command_timeout = command_timeout
        self._queue: list[Response] = []

    @property
    def hangup_seen(self) -> bool:
        """A ``HANGUP`` line arrived (the caller hung up, or the session is ending)."""
        return self.conn.hangup_notices > 0

    async def command(self, name: str, *args: str | int, timeout: float | None | object = _DEFAULT) -> Response:
        """Send one command and return its final response (``100 Trying`` skipped).

        Raises ChannelHungUp on 511 or a closed connection, AgiError on 510/520 or a timeout.
        """
        limit = self.command_timeout if timeout is _DEFAULT else timeout
        self.writer.write(self.conn.send(name, *args))
        await self.writer.drain()
        try:
            response = await asyncio.wait_for(self._next_response(), limit)  # type: ignore[arg-type]
        except asyncio.TimeoutError:
            raise AgiError(f"no answer to {name} within {limit} s") from None
        if response.dead_channel:
            raise ChannelHungUp(f"{name}: {response.line or 'dead channel'}", response)
        if response.code == 510:
            raise AgiError(f"{name}: invalid or unknown command", response)
        if response.code == 520:
            raise AgiError(f"{name}: invalid command syntax", response)
        return response

    async def _next_response(self) -> Response:
        while not self._queue:
            data = await self.reader.read(READ_CHUNK)
            if not data:
                raise ChannelHungUp("connection closed by Asterisk")
            for msg in self.conn.receive_data(data):
                if isinstance(msg, Response):
                    self._queue.append(msg)
        return self._queue.pop(0)

    # --- helpers for the usual commands -------------------------------------------------------

    async def answer(self) -> Response:
        return await self.command("ANSWER")

    async def hangup(self) -> Response:
        return await self.command("HANGUP")

    async def verbose(self, message: str, level: int = 1) -> Response:
        return await self.command("VERBOSE", message, level)

    async def set_variable(self, name: str, value: str) -> Response:
        return await self.command("SET VARIABLE", name, value)

    async def get_variable(self, name: str) -> str | None:
        """The value, or None when unset (``200 result=0``)."""
        response = await self.command("GET VARIABLE", name)
        return response.data if response.value == 1 else None

    async def get_full_variable(self, expression: str) -> str:
        """Substitute ``${...}`` expressions (an unset variable gives "")."""
        response = await self.command("GET FULL VARIABLE", expression)
        return response.data or ""

    async def stream_file(self, name: str, escape_digits: str = "") -> Response:
        """Play a sound file; ``response.digit`` is the escape digit pressed, if any."""
        return await self.command("STREAM FILE", name, Quoted(escape_digits))

    async def get_data(self, name: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """Play ``name`` and read digits: returns (digits, timed_out). ``#`` ends the input."""
        response = await self.command("GET DATA", name, timeout_ms, max_digits)
        if response.value is not None and response.value < 0:
            raise ChannelHungUp("GET DATA: channel hung up", response)
        return response.result, response.data == "timeout"

    async def say_digits(self, digits: str, escape_digits: str = "") -> Response:
        return await self.command("SAY DIGITS", digits, Quoted(escape_digits))

    async def wait_for_digit(self, timeout_ms: int) -> str:
        response = await self.command("WAIT FOR DIGIT", timeout_ms)
        if response.value is not None and response.value < 0:
            raise ChannelHungUp("WAIT FOR DIGIT: channel hung up", response)
        return response.digit

    async def exec(self, application: str, options: str = "", *, timeout: float | None | object = _DEFAULT) -> Response:
        """``EXEC <application> <options>`` (result -2: no such application)."""
        if options:
            return await self.command("EXEC", application, options, timeout=timeout)
        return await self.command("EXEC", application, timeout=timeout)


class FastAgiServer:
    """Routes FastAGI connections to handlers by script path."""

    def __init__(
        self,
        routes: dict[str, Route] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 4573,
        read_timeout: float = 10.0,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        max_env_lines: int = MAX_ENV_LINES,
        max_env_bytes: int = MAX_ENV_BYTES,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        busy_route: Route | None = None,
    ):
        self.routes: dict[str, Route] = dict(routes or {})
        self.host = host
        self._port = port
        self.read_timeout = read_timeout
        self.command_timeout = command_timeout
        self.max_env_lines = max_env_lines
        self.max_env_bytes = max_env_bytes
        self.max_sessions = max_sessions
        self.busy_route = busy_route
        self.sessions_started = 0
        self.sessions_failed = 0
        self.sessions_refused = 0
        self.active = 0
        self.refusing = 0
        self._metrics: Any = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def register_metrics(self, metrics: Any) -> None:
        """``voicegw_sessions_refused_total{server="fastagi"}`` (``metrics.inc``) from now on."""
        self._metrics = metrics
        metrics.inc("voicegw_sessions_refused_total", float(self.sessions_refused), server="fastagi")

    def add_route(self, path: str, handler: Route) -> None:
        """Serve ``agi://host:port/<path>`` with ``handler``."""
        key = path.strip("/")
        if key in self.routes:
            raise ValueError(f"route {key!r} already exists")
        self.routes[key] = handler

    def route(self, path: str) -> Callable[[Route], Route]:
        """Decorator form of :meth:`add_route`."""
        def deco(handler: Route) -> Route:
            self.add_route(path, handler)
            return handler
        return deco

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def listening(self) -> bool:
        """The server accepts connections."""
        return self._server is not None and self._server.is_serving()

    async def start(self) -> "FastAgiServer":
        self._server = await asyncio.start_server(self._accept, self.host, self._port)
        log.info("FastAGI server listening on %s:%d (routes: %s)", self.host, self.port,
                 ", ".join(sorted(self.routes)) or "none")
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._connection(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_environment(self, conn: AgiConnection, reader: asyncio.StreamReader) -> AgiEnvironment | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError
            data = await asyncio.wait_for(reader.read(READ_CHUNK), remaining)
            if not data:
                return None
            for msg in conn.receive_data(data):
                if isinstance(msg, AgiEnvironment):
                    return msg

    def find_route(self, env: AgiEnvironment) -> Route | None:
        """Exact script path first, then its last segment (``gw/voicebot`` -> ``voicebot``)."""
        path = env.script_path
        return self.routes.get(path) or self.routes.get(path.rsplit("/", 1)[-1])

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.max_sessions:
            await self._refuse(reader, writer)
            return
        self.active += 1
        try:
            await self._serve(reader, writer)
        finally:
            self.active -= 1

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``max_sessions`` routes run: tell this call the gateway is busy and let the dialplan go on."""
        self.sessions_refused += 1
        if self._metrics is not None:
            self._metrics.inc("voicegw_sessions_refused_total", server="fastagi")
        peer = writer.get_extra_info("peername")
        if self.refusing >= self.max_sessions:  # a flood of connections: no time for any of them
            log.warning("FastAGI connection from %s refused unread: %d sessions and %d refusals in progress",
                        peer, self.active, self.refusing)
            writer.close()
            return
        self.refusing += 1
        conn = AgiConnection(self.max_env_lines, self.max_env_bytes)
        channel = "-"
        try:
            env = await self._read_environment(conn, reader)
            if env is None:
                return
            channel = env.channel or "-"
            log.warning("FastAGI %s from %s refused: %d sessions in progress (max_sessions %d)", channel, peer,
                        self.active, self.max_sessions)
            if self.busy_route is not None:
                await asyncio.wait_for(self.busy_route(AgiSession(env, conn, reader, writer, self.read_timeout)),
                                       self.read_timeout)
            await self._finish(reader, writer, conn)
        except (asyncio.TimeoutError, ProtocolError, AgiError, ConnectionError, OSError) as exc:
            log.info("FastAGI %s from %s: refusal cut short: %s", channel, peer, exc or "timeout")
        finally:
            self.refusing -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_GRACE_SECONDS)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = AgiConnection(self.max_env_lines, self.max_env_bytes)
        channel = "-"
        try:
            env = await self._read_environment(conn, reader)
            if env is None:
                log.info("FastAGI connection from %s closed before its environment", peer)
                return
            channel = env.channel or "-"
            handler = self.find_route(env)
            if handler is None:
                log.error("FastAGI %s: no route for %r (routes: %s)", channel, env.network_script,
                          ", ".join(sorted(self.routes)))
                self.sessions_failed += 1
                return
            self.sessions_started += 1
            log.info("FastAGI %s: route %s (caller %s)", channel, env.script_path, env.caller_id or "unknown")
            session = AgiSession(env, conn, reader, writer, self.command_timeout)
            await handler(session)
            await self._finish(reader, writer, conn)
        except asyncio.TimeoutError:
            self.sessions_failed += 1
            log.warning("FastAGI connection from %s: no complete environment within %.1f s; closed",
                        peer, self.read_timeout)
        except ProtocolError as exc:
            self.sessions_failed += 1
            log.warning("FastAGI %s from %s: protocol error: %s; closed", channel, peer, exc)
        except ChannelHungUp as exc:
            log.info("FastAGI %s: channel gone: %s", channel, exc)
        except AgiError as exc:
            self.sessions_failed += 1
            log.warning("FastAGI %s: %s; closed", channel, exc)
        except (ConnectionError, OSError) as exc:
            log.info("FastAGI %s: connection lost: %s", channel, exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # a route bug ends its own call only
            self.sessions_failed += 1
            log.exception("FastAGI %s: route failed; closed", channel)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_GRACE_SECONDS)

    async def _finish(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: AgiConnection) -> None:
        """Half-close and read Asterisk's closing ``HANGUP`` line until EOF (bounded)."""
        try:
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
        except (OSError, RuntimeError):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_GRACE_SECONDS
        while (remaining := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(READ_CHUNK), remaining)
            except asyncio.TimeoutError:
                return
            if not data:
                return
            with contextlib.suppress(ProtocolError):
                conn.receive_data(data)
