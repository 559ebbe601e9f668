"""Start the Asterisk side of the gateway: AudioSocket, FastAGI, AMI and (optional) ARI.

``voicegw serve`` calls :func:`start_asterisk_channels`; each returned object has
``async close()``, ``health()`` for ``/healthz`` and, for the servers, ``port`` (bind port 0
in tests and read it back). The three share one :class:`CallRegistry`, so the ``voicebot``
route, the AudioSocket session and the AMI call control agree on which channel carries which
conversation. A part that cannot start (its port taken) raises :class:`ChannelStartError`
naming it, after the parts already started are closed; given a ``failures`` dict instead, the
failure is recorded there and the other parts start.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Sequence

from agi.server import AgiSession, FastAgiServer
from gateway.config import Settings
from gateway.core.actions import Originate
from gateway.core.events import AgentConnected
from gateway.health import ChannelHealth
from gateway.metrics import Metrics
from gateway.telephony.agi_routes import FallbackRoute, PromptFiles, VoicebotRoute
from gateway.telephony.audiosocket_server import AsteriskCallControl, AudioSocketCall, AudioSocketServer
from gateway.telephony.call_outcomes import report_to_core
from gateway.telephony.calls import CallRegistry, DialplanCallControl

log = logging.getLogger(__name__)

AgentCallback = Callable[[str, str], Awaitable[None]]
"""``async f(conversation_id, agent_interface)``: AMI saw the queue ring, or be answered by, that agent."""


class ChannelStartError(RuntimeError):
    """One part of the Asterisk channels (``audiosocket``, ``fastagi``, ``ami``, ``ari``) did not start."""

    def __init__(self, part: str, error: BaseException):
        super().__init__(f"{part}: {error}")
        self.part = part
        self.error = error


class FastAgiChannel(FastAgiServer):
    """The gateway's FastAGI server, reporting its health."""

    def health(self) -> ChannelHealth:
        if not self.listening:
            return ChannelHealth("fastagi", False, "not listening")
        return ChannelHealth("fastagi", True, f"listening on {self.host}:{self.port}, "
                                              f"{self.active} sessions (max {self.max_sessions})")


def screen_pop_to_core(core: Any):
    """An ``on_agent_connected`` callback that tells the core which agent answered."""

    async def agent_connected(conversation_id: str, agent_interface: str) -> None:
        await core.handle(conversation_id, AgentConnected(agent_id=agent_interface, channel="agent"))

    return agent_connected


async def busy_route(agi: AgiSession) -> None:
    """A call FastAGI refused (``fastagi.max_sessions`` reached): say so to the dialplan."""
    await agi.set_variable("VOICEGW_STATUS", "busy")


async def start_asterisk_channels(
    settings: Settings,
    core: Any,
    pipeline: Any,
    *,
    synthesizer: Any | None = None,
    calls: CallRegistry | None = None,
    failures: dict[str, str] | None = None,
    metrics: Metrics | None = None,
    agent_answered: Sequence[AgentCallback] = (),
    agent_called: Sequence[AgentCallback] = (),
) -> list[Any]:
    """Start what is enabled (``audiosocket``, ``fastagi``, ``ami``, ``ari``); returns the closeables.

    ``metrics`` gets the servers' session-cap gauges; ``agent_answered`` and ``agent_called``
    hear, beside the core, which agent the PBX's queue rings and who answered (the agent
    desktop's screen-pop), as ``voicegw serve`` passes them from its :class:`~gateway.app.Gateway`.

    When one part fails to start, the parts already started are closed and
    :class:`ChannelStartError` raised; with ``failures`` the error is recorded under the part's
    name and the other parts go on (``voicegw serve --keep-going``).
    """
    calls = calls if calls is not None else CallRegistry()
    started: list[Any] = []

    async def part(name: str, starter: Any) -> Any:
        try:
            item = await starter()
        except Exception as exc:
            if failures is None:
                await _close_all(started)
                raise ChannelStartError(name, exc) from exc
            log.error("Asterisk %s did not start: %s", name, exc)
            failures[name] = str(exc) or type(exc).__name__
            return None
        started.append(item)
        return item

    fastagi = ari = None
    try:
        ami = None
        if settings.ami.enabled:
            from gateway.telephony.ami import AmiClient

            async def start_ami() -> Any:
                client = AmiClient(settings, calls, on_agent_connected=screen_pop_to_core(core),
                                   node=getattr(pipeline, "calls", None))  # a test's stand-in pipeline has none
                client.agent_callbacks.extend(agent_answered)
                client.agent_called_callbacks.extend(agent_called)
                await client.start()
                core.register_sink(Originate, client.originate_sink)
                client.call_failed_callbacks.append(report_to_core(core))
                core.register_queue_probe(client.queue_wait)  # how long a caller would wait for an agent
                return client

            ami = await part("ami", start_ami)

        def control_factory(call: AudioSocketCall) -> AsteriskCallControl:
            if ami is not None:
                from gateway.telephony.ami import AmiCallControl

                return AmiCallControl(ami, calls, call)
            return DialplanCallControl(calls, call)

        audiosocket = None
        if settings.audiosocket.enabled:
            audiosocket = await part("audiosocket", lambda: AudioSocketServer(
                settings, pipeline, calls=calls, control_factory=control_factory).start())

        if settings.fastagi.enabled:
            cfg = settings.fastagi
            address = cfg.audiosocket_address
            host, _, port = address.rpartition(":")
            if port == "0" and audiosocket is not None:
                address = f"{host}:{audiosocket.port}"  # port 0: the one this process bound
            fallback = FallbackRoute(settings, core, PromptFiles(settings, synthesizer))
            voicebot = VoicebotRoute(settings, calls, fallback, audiosocket_address=address)
            fastagi = await part("fastagi", lambda: FastAgiChannel(
                {"voicebot": voicebot, "fallback": fallback}, host=cfg.host, port=cfg.port,
                read_timeout=cfg.read_timeout_seconds, command_timeout=cfg.command_timeout_seconds,
                max_sessions=cfg.max_sessions, busy_route=busy_route).start())

        if settings.ari.enabled:
            from gateway.telephony.ari import AriApp

            ari = await part("ari", lambda: AriApp(settings, pipeline).start())
    except BaseException:
        await _close_all(started)
        raise
    for server in (audiosocket, fastagi, ari):
        if metrics is not None and server is not None:
            server.register_metrics(metrics)
    return started


async def _close_all(started: list[Any]) -> None:
    for item in reversed(started):
        try:
            await item.close()
        except Exception:  # already failing: report and go on closing
            log.exception("closing %r after a failed start", item)
    started.clear()
