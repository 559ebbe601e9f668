"""Start the Asterisk side of the gateway: AudioSocket, FastAGI, AMI and (optional) ARI.

``voicegw serve`` calls :func:`start_asterisk_channels`; each returned object has
``async close()`` and, for the servers, ``port`` (bind port 0 in tests and read it back).
The three share one :class:`CallRegistry`, so the ``voicebot`` route, the AudioSocket session
and the AMI call control agree on which channel carries which conversation.
"""

from __future__ import annotations

import logging
from typing import Any

from agi.server import AgiSession, FastAgiServer
from gateway.config import Settings
from gateway.core.actions import Originate
from gateway.core.events import AgentConnected
from gateway.telephony.agi_routes import FallbackRoute, PromptFiles, VoicebotRoute
from gateway.telephony.audiosocket_server import AudioSocketCall, AudioSocketServer
from gateway.telephony.call_outcomes import report_to_core
from gateway.telephony.calls import CallRegistry, DialplanCallControl

log = logging.getLogger(__name__)


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
) -> list[Any]:
    """Start what is enabled (``audiosocket``, ``fastagi``, ``ami``, ``ari``); returns the closeables.

    When one part fails to start, the parts already started are closed and the error raised.
    """
    calls = calls if calls is not None else CallRegistry()
    started: list[Any] = []
    try:
        ami = None
        if settings.ami.enabled:
            from gateway.telephony.ami import AmiClient

            ami = AmiClient(settings, calls, on_agent_connected=screen_pop_to_core(core))
            await ami.start()
            started.append(ami)
            core.register_sink(Originate, ami.originate_sink)
            ami.call_failed_callbacks.append(report_to_core(core))

        def control_factory(call: AudioSocketCall) -> Any:
            if ami is not None:
                from gateway.telephony.ami import AmiCallControl

                return AmiCallControl(ami, calls, call)
            return DialplanCallControl(calls, call)

        audiosocket = None
        if settings.audiosocket.enabled:
            audiosocket = AudioSocketServer(settings, pipeline, calls=calls, control_factory=control_factory)
            await audiosocket.start()
            started.append(audiosocket)

        if settings.fastagi.enabled:
            cfg = settings.fastagi
            address = cfg.audiosocket_address
            host, _, port = address.rpartition(":")
            if port == "0" and audiosocket is not None:
                address = f"{host}:{audiosocket.port}"  # port 0: the one this process bound
            tts = synthesizer if synthesizer is not None else getattr(pipeline, "tts", None)
            fallback = FallbackRoute(settings, core, PromptFiles(settings, tts))
            voicebot = VoicebotRoute(settings, calls, fallback, audiosocket_address=address)
            agi = FastAgiServer({"voicebot": voicebot, "fallback": fallback}, host=cfg.host, port=cfg.port,
                                read_timeout=cfg.read_timeout_seconds, command_timeout=cfg.command_timeout_seconds,
                                max_sessions=cfg.max_sessions, busy_route=busy_route)
            await agi.start()
            started.append(agi)

        if settings.ari.enabled:
            from gateway.telephony.ari import AriApp

            started.append(await AriApp(settings, pipeline).start())
    except BaseException:
        for item in reversed(started):
            try:
                await item.close()
            except Exception:  # already failing: report and go on closing
                log.exception("closing %r after a failed start", item)
        raise
    return started
