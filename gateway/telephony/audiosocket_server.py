"""AudioSocket server: one :class:`VoiceSession` per Asterisk AudioSocket connection.

A thin asyncio layer around :mod:`gateway.telephony.audiosocket`. Per connection:

* the first message is the UUID (within ``read_timeout_seconds``); it names the call. When the
  ``voicebot`` AGI route registered that UUID (see :mod:`calls`), the session gets the caller id,
  dialed number and conversation id the route learned; otherwise a new conversation starts;
* the sample rate comes from the first audio kind (0x10 = 8 kHz, 0x12 = 16 kHz, ...). The
  ``AudioSocket()`` application always sends 8 kHz; the channel driver sends its first audio in
  the same read as the UUID. Other wideband rates are resampled to 16 kHz for the pipeline;
* caller audio and DTMF (kind 0x03) go to the call's media leg (:mod:`media_leg`: held until
  the session has started, flood limit, read timeout), which hands them to the session;
* the shared 20 ms clock (:mod:`media_pacer`, drift-free: ``start + n * 20 ms`` of
  ``loop.time()``) ticks every leg, which sends one frame of the session's audio. Asterisk does
  not re-pace what it receives, and the application hangs up after 2 s without a frame either
  way, so the gateway sends silence whenever the bot has nothing to say (also while the
  conversation is still being opened);
* the call ends on a TCP close from Asterisk (it never sends 0x00), a read timeout, a protocol
  error, a peer that stops reading, or when the session hangs up (a goodbye, a transfer, a
  failure): the gateway then sends ``00 00 00`` and closes, so ``AudioSocket()`` returns and the
  dialplan goes on (the ``voicebot`` route tells it how the call ended).

Connections are asyncio Protocols: no task per read and one timer for all calls, so the cost
per call is the codec and the session's own work. This module is the codec's glue to
:class:`~gateway.telephony.media_leg.MediaLeg` (``_Connection`` is the leg's wire); a failure
ends its own connection with one log line carrying the call id, never the server or another call.

At most ``audiosocket.max_sessions`` connections are served at once. One past it is refused
as soon as its UUID arrives (at most ``REFUSE_WAIT_SECONDS`` later): ``00 00 00`` (hangup),
then close, so ``AudioSocket()`` returns and the dialplan goes on; no session is created, a
log line names the call, and ``voicegw_sessions_refused_total{server="audiosocket"}`` counts it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from gateway.config import Settings
from gateway.core.actions import Transfer
from gateway.health import ChannelHealth
from gateway.limits import SessionCap
from gateway.telephony import audiosocket as asock
from gateway.telephony.calls import CallRecord, CallRegistry
from gateway.telephony.media_leg import CallTasks, LegEnd, LegState, MediaLeg
from gateway.telephony.media_pacer import MediaPacer, PacingStats
from gateway.voice.audio import Resampler
from gateway.voice.port import VoiceSessions

log = logging.getLogger(__name__)

RATE_PROBE_SECONDS = 0.3
"""How long to wait after the UUID for the first audio message that tells the rate."""
MAX_WRITE_BUFFER = 64 * 1024
"""About 4 s of 8 kHz audio queued in the transport: the peer stopped reading."""
REFUSE_WAIT_SECONDS = 1.0
"""How long a connection past ``max_sessions`` may take to send its UUID (Asterisk sends it at
once) before it is refused anyway; the UUID only names the call in the log line."""
GATEWAY_ENDS = frozenset({"shutdown"})
"""Ends (besides the session's own) after which Asterisk is told with ``00 00 00``."""
ABORTS = frozenset({"stalled", "protocol-error"})
"""Ends after which the connection is reset rather than closed (the peer misbehaved)."""


@dataclass
class AudioSocketCall:
    """One live AudioSocket connection, as its call control sees it."""

    call_id: str
    conversation_id: str
    wire_rate: int
    record: CallRecord | None


class AsteriskCallControl(Protocol):
    """How an AudioSocket call is tagged and transferred (AMI, or the dialplan after the call)."""

    async def call_started(self, conversation_id: str) -> None: ...

    async def transfer(self, conversation_id: str, action: Transfer) -> bool: ...


ControlFactory = Callable[[AudioSocketCall], AsteriskCallControl]


def session_rate(wire_rate: int) -> int:
    """The pipeline rate for an AudioSocket rate (8000 stays; wideband rates become 16000)."""
    return 8000 if wire_rate <= 8000 else 16000


class _Connection(asyncio.Protocol):
    """One AudioSocket connection: codec in, media leg out; the leg's wire."""

    def __init__(self, server: "AudioSocketServer"):
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = asock.AudioSocketParser(server.cfg.max_payload_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.call_id = "-"
        self.call: AudioSocketCall | None = None
        self.control: AsteriskCallControl | None = None
        self.leg: MediaLeg | None = None
        self.wire_rate = 0
        self.inbound: Resampler | None = None
        self.outbound: Resampler | None = None
        self.probe: asyncio.TimerHandle | None = None
        self.admitted = False
        self.refusal: asyncio.TimerHandle | None = None
        self.reason = ""

    # --- transport callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        self.server.connections.add(self)
        self.admitted = self.server.cap.admit()
        if not self.admitted:
            self.refusal = self.loop.call_later(REFUSE_WAIT_SECONDS, self._refuse)
            return
        self.leg = MediaLeg(self, kind="AudioSocket", call_id=self.call_id, pacer=self.server.pacer,
                            spawn=self.server.tasks.spawn, read_timeout=self.server.cfg.read_timeout_seconds)

    def data_received(self, data: bytes) -> None:
        if self.reason:
            return
        leg = self.leg
        if leg is None:
            self._refuse(data)
            return
        leg.heard()
        try:
            msgs = self.parser.receive_data(data)
        except asock.ProtocolError as exc:
            log.warning("AudioSocket call %s from %s: protocol error: %s; connection closed",
                        self.call_id, self.peer, exc)
            leg.close("protocol-error")
            return
        for msg in msgs:
            if isinstance(msg, asock.Uuid):
                self.call_id = leg.call_id = str(msg.uuid)
                self.probe = self.loop.call_later(RATE_PROBE_SECONDS, self._begin, 8000)
            elif isinstance(msg, asock.Audio):
                self._audio(leg, msg)
            elif isinstance(msg, asock.Dtmf):
                leg.caller_key(msg.digit)
            elif isinstance(msg, asock.Hangup):
                leg.close("hangup")
            elif isinstance(msg, asock.ErrorMessage):
                log.warning("AudioSocket call %s: peer sent error 0x%s", self.call_id, msg.payload.hex())
            if self.reason:
                return

    def eof_received(self) -> bool:
        try:
            self.parser.receive_eof()
        except asock.ProtocolError as exc:
            log.warning("AudioSocket call %s from %s: protocol error: %s; connection closed",
                        self.call_id, self.peer, exc)
            self._close("protocol-error")
            return False
        if self.call_id == "-":
            log.info("AudioSocket connection from %s closed before its UUID", self.peer)
        self._close("hangup")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.reason:
            log.info("AudioSocket call %s from %s: connection lost: %s", self.call_id, self.peer, exc)
        self._close("hangup")
        self.server.connections.discard(self)
        if self.admitted:
            self.admitted = False
            self.server.cap.release()

    def _close(self, reason: str) -> None:
        if self.leg is not None:
            self.leg.close(reason)
        elif not self.reason:
            self.reason = reason
            self._cancel_timers()

    def _refuse(self, data: bytes = b"") -> None:
        """The server (or the node) holds its most calls: hang this one up before it starts."""
        if self.reason:
            return
        self.reason = "busy"
        self._cancel_timers()
        try:
            first = self.parser.receive_data(data)[:1]
        except asock.ProtocolError:
            first = []
        if first and isinstance(first[0], asock.Uuid):
            self.call_id = str(first[0].uuid)
        log.warning("AudioSocket call %s from %s refused: %s; hangup sent", self.call_id, self.peer,
                    self.server.cap.refusal())
        record = self.server.calls.by_uuid(self.call_id)
        if record is not None:
            record.end_reason = "busy"  # the voicebot route tells the dialplan VOICEGW_STATUS=busy
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(asock.encode_hangup())
            transport.close()

    # --- call setup ----------------------------------------------------------------------------
    def _audio(self, leg: MediaLeg, msg: asock.Audio) -> None:
        if leg.state is LegState.NEW:
            self._begin(msg.sample_rate)
            if self.reason:
                return
        if msg.sample_rate != self.wire_rate:
            log.warning("AudioSocket call %s: audio at %d Hz in a %d Hz call; dropped", self.call_id,
                        msg.sample_rate, self.wire_rate)
            return
        pcm = self.inbound.process(msg.pcm) if self.inbound is not None else msg.pcm
        if pcm:
            leg.caller_audio(pcm)

    def _begin(self, wire_rate: int) -> None:
        leg = self.leg
        if leg is None or leg.state is not LegState.NEW or self.reason:
            return
        self._cancel_timers()
        server = self.server
        self.wire_rate = wire_rate
        rate = session_rate(wire_rate)
        if wire_rate != rate:
            self.inbound, self.outbound = Resampler(wire_rate, rate), Resampler(rate, wire_rate)
        record = server.calls.by_uuid(self.call_id)
        if record is not None:
            record.connected = True
        # A call the voicebot route registered carries what the route learned; any other UUID is
        # offered to the core as a conversation id (resumed when it exists, else a new one).
        self.call = AudioSocketCall(self.call_id, record.conversation_id if record else self.call_id,
                                    wire_rate, record)
        self.control = server.control_factory(self.call) if server.control_factory else None
        try:
            session = server.pipeline.session(
                call_id=self.call_id, sample_rate=rate,
                caller_id=record.caller_id if record else "", dialed=record.dialed if record else "",
                conversation_id=self.call.conversation_id, outbound=bool(record and record.outbound),
                callback=record.callback if record else "", attestation=record.attestation if record else "",
                admitted=True,  # its slot of voice.max_calls was taken with the connection (self.cap)
            )
        except Exception:  # the pipeline refused the call: end this connection only
            log.exception("AudioSocket call %s: no voice session; connection closed", self.call_id)
            leg.close("error")
            return
        server.active[self.call_id] = self.call
        log.info("AudioSocket call %s started (%d Hz, conversation %s)", self.call_id, wire_rate,
                 self.call.conversation_id or "new")
        leg.begin(session)

    def _cancel_timers(self) -> None:
        for timer in (self.probe, self.refusal):
            if timer is not None:
                timer.cancel()
        self.probe = self.refusal = None

    # --- the leg's wire (gateway.telephony.media_leg.LegWire) ----------------------------------
    def play(self, pull: Callable[[], bytes]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        pcm = pull()
        if self.outbound is not None:
            pcm = self.outbound.process(pcm)
        if pcm:
            transport.write(asock.encode_audio(pcm, self.wire_rate))
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("AudioSocket call %s: peer stopped reading (%d bytes queued); closing",
                        self.call_id, transport.get_write_buffer_size())
            assert self.leg is not None
            self.leg.close("stalled")

    def clear(self) -> None:
        """Nothing to clear: audio goes out in real time and Asterisk plays it as it comes."""

    def opened(self, conversation_id: str) -> None:
        call = self.call
        if call is None or not conversation_id:
            return
        call.conversation_id = conversation_id
        record = call.record
        if record is not None and record.conversation_id != conversation_id:
            self.server.calls.set_conversation(record, conversation_id)
        if self.control is not None:
            self.server.tasks.spawn(self.control.call_started(conversation_id))

    async def transfer(self, conversation_id: str, action: Transfer) -> bool:
        if self.control is None:
            log.warning("AudioSocket call %s: no call control to transfer with", self.call_id)
            return False
        return await self.control.transfer(conversation_id, action)

    def hanging_up(self) -> float:
        return 0.0  # nothing buffered beyond the transport: 0x00 at once

    def played_out(self) -> bool:
        return True

    def close(self, end: LegEnd) -> None:
        """End the call (once: the leg calls it once): 0x00 when the gateway ends it, close, tell
        the voicebot route."""
        self.reason = end.reason
        self._cancel_timers()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if self.call is not None and (end.by_session or end.reason in GATEWAY_ENDS):
                transport.write(asock.encode_hangup())
            if end.reason in ABORTS:
                transport.abort()
            else:
                transport.close()
        self.server.ended_calls += 1
        if self.call is None:
            return
        self.server.active.pop(self.call_id, None)
        record = self.call.record
        if record is not None and not record.end_reason:
            record.end_reason = end.reason  # an "error" here reaches the dialplan (voicebot route)


class AudioSocketServer:
    """Accepts AudioSocket connections from Asterisk and runs a voice session for each."""

    def __init__(
        self,
        settings: Settings,
        pipeline: VoiceSessions,
        *,
        calls: CallRegistry | None = None,
        control_factory: ControlFactory | None = None,
    ):
        self.settings = settings
        self.cfg = settings.audiosocket
        self.pipeline = pipeline
        self.calls = calls if calls is not None else CallRegistry()
        self.control_factory = control_factory
        self.active: dict[str, AudioSocketCall] = {}
        self.connections: set[_Connection] = set()
        self.pacer = MediaPacer("AudioSocket")
        self.ended_calls = 0
        self.cap = SessionCap("audiosocket", self.cfg.max_sessions, within=pipeline.calls)
        self._server: asyncio.base_events.Server | None = None
        self.tasks = CallTasks()
    def register_metrics(self, metrics: Any) -> None:
        """``voicegw_sessions_refused_total{server="audiosocket"}`` on ``/metrics``."""
        self.cap.register_metrics(metrics)

    @property
    def pacing(self) -> PacingStats:
        """Tick timing of the shared 20 ms clock, for benches and tests."""
        return self.pacer.stats

    @property
    def port(self) -> int:
        """The bound TCP port (useful when configured as 0)."""
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    def health(self) -> ChannelHealth:
        """For ``/healthz``: listening, and how many calls it holds."""
        if self._server is None or not self._server.is_serving():
            return ChannelHealth("audiosocket", False, "not listening")
        return ChannelHealth("audiosocket", True, f"listening on {self.cfg.host}:{self.port}, "
                                                  f"{len(self.active)} calls (max {self.cfg.max_sessions})")

    async def start(self) -> "AudioSocketServer":
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.cfg.host, self.cfg.port)
        log.info("AudioSocket server listening on %s:%d", self.cfg.host, self.port)
        return self

    async def close(self) -> None:
        """Stop accepting, end every live call (0x00 then close), wait for the sessions to stop."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            conn._close("shutdown")
        await self.pacer.close()
        await self.tasks.wait()
