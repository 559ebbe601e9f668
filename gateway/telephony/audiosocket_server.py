"""AudioSocket server: one :class:`VoiceSession` per Asterisk AudioSocket connection.

A thin asyncio layer around :mod:`gateway.telephony.audiosocket`. Per connection:

* the first message is the UUID (within ``read_timeout_seconds``); it names the call. When the
  ``voicebot`` AGI route registered that UUID (see :mod:`calls`), the session gets the caller id,
  dialed number and conversation id the route learned; otherwise a new conversation starts;
* the sample rate comes from the first audio kind (0x10 = 8 kHz, 0x12 = 16 kHz, ...). The
  ``AudioSocket()`` application always sends 8 kHz; the channel driver sends its first audio in
  the same read as the UUID. Other wideband rates are resampled to 16 kHz for the pipeline;
* caller audio goes to ``session.push_audio``, DTMF (kind 0x03) to ``session.push_dtmf``;
* the shared 20 ms clock (:mod:`media_pacer`, drift-free: ``start + n * 20 ms`` of
  ``loop.time()``) ticks every connection, which sends ``session.pull_frame()``. Asterisk does not
  re-pace what it receives, and the application hangs up after 2 s without a frame either way,
  so the gateway sends silence whenever the bot has nothing to say (also while the
  conversation is still being opened);
* the call ends on a TCP close from Asterisk (it never sends 0x00), a read timeout, a protocol
  error, a peer that stops reading, or when the session asks to end (``session.ended``): the
  gateway then sends ``00 00 00`` and closes, so ``AudioSocket()`` returns and the dialplan goes on.

Connections are asyncio Protocols: no task per read and one timer for all calls, so the cost
per call is the codec and the session's own work. A failure ends its own connection with one
log line carrying the call id, never the server or another call.

At most ``audiosocket.max_sessions`` connections are served at once. One past it is refused
as soon as its UUID arrives (at most ``REFUSE_WAIT_SECONDS`` later): ``00 00 00`` (hangup),
then close, so ``AudioSocket()`` returns and the dialplan goes on; no session is created, a
log line names the call, and ``voicegw_sessions_refused_total{server="audiosocket"}`` counts it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from gateway.config import Settings
from gateway.health import ChannelHealth
from gateway.limits import SessionCap
from gateway.telephony import audiosocket as asock
from gateway.telephony.calls import CallRecord, CallRegistry
from gateway.telephony.media_pacer import MediaPacer, PacingStats
from gateway.voice.audio import Resampler

log = logging.getLogger(__name__)

RATE_PROBE_SECONDS = 0.3
"""How long to wait after the UUID for the first audio message that tells the rate."""
MAX_WRITE_BUFFER = 64 * 1024
"""About 4 s of 8 kHz audio queued in the transport: the peer stopped reading."""
MAX_PENDING_BYTES = 256 * 1024
"""Caller audio held while the conversation is being opened (about 16 s at 8 kHz)."""
REFUSE_WAIT_SECONDS = 1.0
"""How long a connection past ``max_sessions`` may take to send its UUID (Asterisk sends it at
once) before it is refused anyway; the UUID only names the call in the log line."""
FLOOD_BURST_SECONDS = 3.0
FLOOD_SPEED = 4.0
"""Caller audio may arrive in bursts (a network hiccup: up to 6 s at once, from a full bucket of
3 s going 3 s into debt) but not, on average, faster than four times real time: a peer that
floods audio would cost every call CPU (VAD)."""


@dataclass
class AudioSocketCall:
    """One live AudioSocket connection, as seen by a call control."""

    call_id: str
    conversation_id: str
    wire_rate: int
    record: CallRecord | None
    hangup_requested: asyncio.Event = field(default_factory=asyncio.Event)

    def request_hangup(self) -> None:
        """Ask the server to send 0x00 and close this connection."""
        self.hangup_requested.set()


ControlFactory = Callable[[AudioSocketCall], Any]


def session_rate(wire_rate: int) -> int:
    """The pipeline rate for an AudioSocket rate (8000 stays; wideband rates become 16000)."""
    return 8000 if wire_rate <= 8000 else 16000


class _Connection(asyncio.Protocol):
    """One AudioSocket connection: codec in, session calls out, frames on each tick."""

    def __init__(self, server: "AudioSocketServer"):
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = asock.AudioSocketParser(server.cfg.max_payload_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.call_id = "-"
        self.call: AudioSocketCall | None = None
        self.session: Any = None
        self.ready = False
        self.wire_rate = 0
        self.pending: list[asock.Message] = []
        self.pending_bytes = 0
        self.inbound: Resampler | None = None
        self.outbound: Resampler | None = None
        self.last_rx = self.loop.time()
        self.audio_credit = float("inf")  # full bucket: set at the first audio, when the rate is known
        self.credit_time = self.last_rx
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
        self.server.pacer.add(self)

    def data_received(self, data: bytes) -> None:
        if self.reason:
            return
        if not self.admitted:
            self._refuse(data)
            return
        self.last_rx = self.loop.time()
        try:
            msgs = self.parser.receive_data(data)
        except asock.ProtocolError as exc:
            log.warning("AudioSocket call %s from %s: protocol error: %s; connection closed",
                        self.call_id, self.peer, exc)
            self.end("protocol-error")
            return
        if self.session is None or not self.ready:
            self._hold(msgs)
        else:
            self._feed(msgs)

    def eof_received(self) -> bool:
        try:
            self.parser.receive_eof()
        except asock.ProtocolError as exc:
            log.warning("AudioSocket call %s from %s: protocol error: %s; connection closed",
                        self.call_id, self.peer, exc)
            self.end("protocol-error")
            return False
        if self.session is None and self.call_id == "-":
            log.info("AudioSocket connection from %s closed before its UUID", self.peer)
        if self.session is not None and not self.ready:
            self.pending.append(asock.Hangup())  # fed once the session has started
            return True
        self.end("hangup")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.reason:
            log.info("AudioSocket call %s from %s: connection lost: %s", self.call_id, self.peer, exc)
        self.end("hangup")
        self.server.connections.discard(self)
        self.server.pacer.discard(self)
        if self.admitted:
            self.admitted = False
            self.server.cap.release()

    def _refuse(self, data: bytes = b"") -> None:
        """The server holds ``max_sessions`` calls: hang this one up before it starts."""
        if self.reason:
            return
        self.reason = "busy"
        if self.refusal is not None:
            self.refusal.cancel()
            self.refusal = None
        try:
            first = self.parser.receive_data(data)[:1]
        except asock.ProtocolError:
            first = []
        if first and isinstance(first[0], asock.Uuid):
            self.call_id = str(first[0].uuid)
        log.warning("AudioSocket call %s from %s refused: %d calls in progress (audiosocket.max_sessions); "
                    "hangup sent", self.call_id, self.peer, self.server.cap.active)
        record = self.server.calls.by_uuid(self.call_id)
        if record is not None:
            record.end_reason = "busy"  # the voicebot route tells the dialplan VOICEGW_STATUS=busy
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(asock.encode_hangup())
            transport.close()

    # --- call setup ----------------------------------------------------------------------------
    def _hold(self, msgs: list[asock.Message]) -> None:
        for msg in msgs:
            if isinstance(msg, asock.Uuid):
                self.call_id = str(msg.uuid)
                self.probe = self.loop.call_later(RATE_PROBE_SECONDS, self._begin, 8000)
                continue
            if isinstance(msg, asock.Audio):
                self.pending_bytes += len(msg.pcm)
                if self.session is None and self.probe is not None:
                    self._begin(msg.sample_rate)
            self.pending.append(msg)
        while self.pending_bytes > MAX_PENDING_BYTES and self.pending:
            dropped = self.pending.pop(0)
            if isinstance(dropped, asock.Audio):
                self.pending_bytes -= len(dropped.pcm)

    def _begin(self, wire_rate: int) -> None:
        if self.session is not None or self.reason:
            return
        if self.probe is not None:
            self.probe.cancel()
            self.probe = None
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
        control = server.control_factory(self.call) if server.control_factory else None
        try:
            self.session = server.pipeline.session(
                call_id=self.call_id, sample_rate=rate,
                caller_id=record.caller_id if record else "", dialed=record.dialed if record else "",
                conversation_id=self.call.conversation_id, control=control,
                outbound=bool(record and record.outbound),
                callback=record.callback if record else "", attestation=record.attestation if record else "",
            )
        except Exception:  # the pipeline refused the call: end this connection only
            log.exception("AudioSocket call %s: no voice session; connection closed", self.call_id)
            self.end("error")
            return
        server.active[self.call_id] = self.call
        log.info("AudioSocket call %s started (%d Hz, conversation %s)", self.call_id, wire_rate,
                 self.call.conversation_id or "new")
        server.spawn(self._start(control, record))

    async def _start(self, control: Any, record: CallRecord | None) -> None:
        try:
            await self.session.start()
        except Exception:
            log.exception("AudioSocket call %s: session start failed; connection closed", self.call_id)
            self.end("error")
            return
        if self.reason:
            return
        call = self.call
        assert call is not None
        call.conversation_id = getattr(self.session, "conversation_id", "") or call.conversation_id
        if record is not None and call.conversation_id and record.conversation_id != call.conversation_id:
            self.server.calls.set_conversation(record, call.conversation_id)
        started = getattr(control, "call_started", None)
        if started is not None and call.conversation_id:
            self.server.spawn(started(call.conversation_id))
        self.ready = True
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        self._feed(pending)

    def _flooding(self, nbytes: int) -> bool:
        """Token bucket on caller audio: refilled at FLOOD_SPEED x real time, FLOOD_BURST_SECONDS deep."""
        bytes_per_second = self.wire_rate * 2
        now = self.loop.time()
        cap = FLOOD_BURST_SECONDS * bytes_per_second
        self.audio_credit = min(cap, self.audio_credit + (now - self.credit_time) * bytes_per_second * FLOOD_SPEED)
        self.credit_time = now
        self.audio_credit -= nbytes
        return self.audio_credit < -cap

    def _feed(self, msgs: list[asock.Message]) -> None:
        session = self.session
        for msg in msgs:
            if isinstance(msg, asock.Audio):
                if self._flooding(len(msg.pcm)):
                    log.warning("AudioSocket call %s from %s: audio arrives much faster than real time; "
                                "closing", self.call_id, self.peer)
                    self.end("flood")
                    return
                pcm = msg.pcm
                if msg.sample_rate != self.wire_rate:
                    log.warning("AudioSocket call %s: audio at %d Hz in a %d Hz call; dropped", self.call_id,
                                msg.sample_rate, self.wire_rate)
                    continue
                if self.inbound is not None:
                    pcm = self.inbound.process(pcm)
                if pcm:
                    session.push_audio(pcm)
            elif isinstance(msg, asock.Dtmf):
                session.push_dtmf(msg.digit)
            elif isinstance(msg, asock.Hangup):
                self.end("hangup")
                return
            elif isinstance(msg, asock.ErrorMessage):
                log.warning("AudioSocket call %s: peer sent error 0x%s", self.call_id, msg.payload.hex())

    # --- the 20 ms tick ------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Send one frame; check the read timeout, the peer's reading, and the session's end."""
        if self.reason or self.transport is None:
            return
        timeout = self.server.cfg.read_timeout_seconds
        if now - self.last_rx > timeout:
            log.warning("AudioSocket call %s from %s: nothing received for %.1f s; closing",
                        self.call_id, self.peer, timeout)
            self.end("timeout")
            return
        if self.session is None:
            return
        if self.ready and (self.session.ended.is_set() or (self.call and self.call.hangup_requested.is_set())):
            self.end("ended")
            return
        if self.ready:
            pcm = self.session.pull_frame()
            if self.outbound is not None:
                pcm = self.outbound.process(pcm)
        else:  # the conversation is being opened: keep AudioSocket() alive
            pcm = bytes(self.wire_rate // 50 * 2)
        if pcm:
            self.transport.write(asock.encode_audio(pcm, self.wire_rate))
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("AudioSocket call %s: peer stopped reading (%d bytes queued); closing",
                        self.call_id, self.transport.get_write_buffer_size())
            self.end("stalled")

    # --- ending --------------------------------------------------------------------------------
    def end(self, reason: str) -> None:
        """End the call once: 0x00 when the gateway ends it, close, stop the session."""
        if self.reason:
            return
        self.reason = reason
        for timer in (self.probe, self.refusal):
            if timer is not None:
                timer.cancel()
        self.probe = self.refusal = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if reason in ("ended", "shutdown") and self.session is not None:
                transport.write(asock.encode_hangup())
            if reason in ("stalled", "protocol-error"):
                transport.abort()
            else:
                transport.close()
        self.server.ended_calls += 1
        if self.session is None:
            return
        self.server.active.pop(self.call_id, None)
        stop_reason = reason
        if reason == "ended":
            stop_reason = getattr(self.session, "end_reason", "") or "completed"
        record = self.call.record if self.call is not None else None
        if record is not None and not record.end_reason:
            record.end_reason = stop_reason  # an "error" here reaches the dialplan (voicebot route)
        log.info("AudioSocket call %s ended: %s", self.call_id, stop_reason)
        self.server.spawn(self._stop(stop_reason))

    async def _stop(self, reason: str) -> None:
        try:
            await self.session.stop(reason=reason)
        except Exception:
            log.exception("AudioSocket call %s: session stop failed", self.call_id)


class AudioSocketServer:
    """Accepts AudioSocket connections from Asterisk and runs a voice session for each."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Any,
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
        self.cap = SessionCap("audiosocket", self.cfg.max_sessions)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

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
            conn.end("shutdown")
        await self.pacer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
