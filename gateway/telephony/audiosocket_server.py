"""AudioSocket server: one :class:`VoiceSession` per Asterisk AudioSocket connection.

A thin asyncio layer around :mod:`gateway.telephony.audiosocket`. Per connection:

* the first message is the UUID (within ``read_timeout_seconds``); it names the call. When the
  ``voicebot`` AGI route opened a conversation for that UUID (see :mod:`calls`), the session
  continues that conversation with the caller id from the dialplan; otherwise a new one starts;
* the sample rate comes from the first audio kind (0x10 = 8 kHz, 0x12 = 16 kHz, ...). The
  ``AudioSocket()`` application always sends 8 kHz; the channel driver sends its first audio in
  the same read as the UUID. Other rates are resampled to the nearest pipeline rate;
* caller audio goes to ``session.push_audio``, DTMF (kind 0x03) to ``session.push_dtmf``;
* a tick loop calls ``session.pull_frame()`` every 20 ms on a drift-free schedule and sends it.
  Asterisk does not re-pace what it receives, and the application hangs up after 2 s without
  a frame either way, so the gateway sends silence whenever the bot has nothing to say;
* the call ends on a TCP close from Asterisk (it never sends 0x00), a read timeout, a protocol
  error, or when the session asks to end (``session.ended``): then the gateway sends ``00 00 00``
  and closes, and ``AudioSocket()`` returns normally so the dialplan goes on.

A failure ends its own connection with one log line carrying the call id, never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Callable

from gateway.config import Settings
from gateway.telephony import audiosocket as asock
from gateway.telephony.calls import CallRecord, CallRegistry
from gateway.voice.audio import Resampler

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.020
READ_CHUNK = 65536
RATE_PROBE_SECONDS = 0.3
"""How long to wait after the UUID for the first audio message that tells the rate."""
MAX_CATCH_UP_SECONDS = 0.2
"""A tick loop later than this skips ahead instead of sending a burst of old frames."""
MAX_WRITE_BUFFER = 64 * 1024
"""About 4 s of 8 kHz audio queued in the kernel and transport: the peer stopped reading."""
HANGUP_DRAIN_SECONDS = 1.0


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


@dataclass
class PacingStats:
    """Outgoing frame timing, for benches and tests."""

    frames: int = 0
    max_late: float = 0.0
    total_late: float = 0.0
    skips: int = 0

    def note(self, late: float) -> None:
        self.frames += 1
        self.total_late += late
        if late > self.max_late:
            self.max_late = late


def session_rate(wire_rate: int) -> int:
    """The pipeline rate for an AudioSocket rate (8000 stays; wideband rates become 16000)."""
    return 8000 if wire_rate <= 8000 else 16000


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
        self.pacing = PacingStats()
        self.ended_calls = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound TCP port (useful when configured as 0)."""
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> "AudioSocketServer":
        self._server = await asyncio.start_server(self._accept, self.cfg.host, self.cfg.port, limit=READ_CHUNK)
        log.info("AudioSocket server listening on %s:%d", self.cfg.host, self.port)
        return self

    async def close(self) -> None:
        """Stop accepting, end every live call, wait for them."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for call in list(self.active.values()):
            call.request_hangup()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._connection(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        parser = asock.AudioSocketParser(self.cfg.max_payload_bytes)
        call_id = "-"
        try:
            pending = await self._read_until_uuid(reader, parser, peer)
            if pending is None:
                return
            first = pending.pop(0)
            assert isinstance(first, asock.Uuid)
            call_id = str(first.uuid)
            wire_rate = await self._probe_rate(reader, parser, pending)
            await self._run_call(reader, writer, parser, call_id, wire_rate, pending)
        except asock.ProtocolError as exc:
            log.warning("AudioSocket call %s from %s: protocol error: %s; connection closed", call_id, peer, exc)
        except (ConnectionError, OSError) as exc:
            log.info("AudioSocket call %s from %s: connection lost: %s", call_id, peer, exc)
        except Exception:  # one call must never take the server down
            log.exception("AudioSocket call %s from %s: unexpected failure; connection closed", call_id, peer)
        finally:
            self.ended_calls += 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), HANGUP_DRAIN_SECONDS)

    async def _read(self, reader: asyncio.StreamReader, timeout: float) -> bytes:
        return await asyncio.wait_for(reader.read(READ_CHUNK), timeout)

    async def _read_until_uuid(
        self, reader: asyncio.StreamReader, parser: asock.AudioSocketParser, peer: Any
    ) -> list[asock.Message] | None:
        msgs: list[asock.Message] = []
        while not msgs:
            try:
                data = await self._read(reader, self.cfg.read_timeout_seconds)
            except asyncio.TimeoutError:
                log.warning("AudioSocket connection from %s sent no UUID within %.1f s; closed",
                            peer, self.cfg.read_timeout_seconds)
                return None
            if not data:
                parser.receive_eof()
                log.info("AudioSocket connection from %s closed before its UUID", peer)
                return None
            msgs += parser.receive_data(data)
        return msgs

    async def _probe_rate(
        self, reader: asyncio.StreamReader, parser: asock.AudioSocketParser, pending: list[asock.Message]
    ) -> int:
        deadline = time.monotonic() + RATE_PROBE_SECONDS
        while True:
            for msg in pending:
                if isinstance(msg, asock.Audio):
                    return msg.sample_rate
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return 8000
            try:
                data = await self._read(reader, remaining)
            except asyncio.TimeoutError:
                return 8000
            if not data:
                parser.receive_eof()
                pending.append(asock.Hangup())
                return 8000
            pending += parser.receive_data(data)

    async def _run_call(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parser: asock.AudioSocketParser,
        call_id: str,
        wire_rate: int,
        pending: list[asock.Message],
    ) -> None:
        record = self.calls.by_uuid(call_id)
        if record is not None:
            record.connected = True
        rate = session_rate(wire_rate)
        call = AudioSocketCall(call_id, record.conversation_id if record else "", wire_rate, record)
        control = self.control_factory(call) if self.control_factory else None
        session = self.pipeline.session(
            call_id=call_id,
            sample_rate=rate,
            caller_id=record.caller_id if record else "",
            dialed=record.dialed if record else "",
            conversation_id=call.conversation_id,
            control=control,
            outbound=bool(record and record.outbound),
        )
        self.active[call_id] = call
        log.info("AudioSocket call %s started (%d Hz, conversation %s)", call_id, wire_rate,
                 call.conversation_id or "new")
        reason = "hangup"
        try:
            await session.start()
            call.conversation_id = getattr(session, "conversation_id", "") or call.conversation_id
            if record is not None and call.conversation_id and record.conversation_id != call.conversation_id:
                self.calls.set_conversation(record, call.conversation_id)
            started = getattr(control, "call_started", None)
            if started is not None and call.conversation_id:
                asyncio.get_running_loop().create_task(started(call.conversation_id))
            inbound = Resampler(wire_rate, rate) if wire_rate != rate else None
            outbound = Resampler(rate, wire_rate) if wire_rate != rate else None
            done = self._feed(session, pending, inbound)
            if done:
                reason = "hangup"
            else:
                reason = await self._serve(reader, writer, parser, session, call, wire_rate, inbound, outbound)
        finally:
            self.active.pop(call_id, None)
            if reason in ("ended", "closing"):
                with contextlib.suppress(Exception):
                    writer.write(asock.encode_hangup())
                    await asyncio.wait_for(writer.drain(), HANGUP_DRAIN_SECONDS)
            log.info("AudioSocket call %s ended: %s", call_id, reason)
            try:
                await session.stop(reason=(getattr(session, "end_reason", "") or "completed")
                                   if reason == "ended" else reason)
            except Exception:
                log.exception("AudioSocket call %s: session stop failed", call_id)

    def _feed(self, session: Any, msgs: list[asock.Message], inbound: Resampler | None) -> bool:
        """Hand messages to the session; True when the peer ended the call."""
        for msg in msgs:
            if isinstance(msg, asock.Audio):
                pcm = msg.pcm
                if inbound is not None:
                    pcm = inbound.process(pcm)
                if pcm:
                    session.push_audio(pcm)
            elif isinstance(msg, asock.Dtmf):
                session.push_dtmf(msg.digit)
            elif isinstance(msg, asock.Hangup):
                return True
            elif isinstance(msg, asock.ErrorMessage):
                log.warning("AudioSocket call %s: peer sent error 0x%s", session.call_id, msg.payload.hex())
        return False

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parser: asock.AudioSocketParser,
        session: Any,
        call: AudioSocketCall,
        wire_rate: int,
        inbound: Resampler | None,
        outbound: Resampler | None,
    ) -> str:
        loop = asyncio.get_running_loop()
        tasks = {
            loop.create_task(self._receive(reader, parser, session, inbound)),
            loop.create_task(self._tick(writer, session, wire_rate, outbound)),
            loop.create_task(self._wait_end(session, call)),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        task = done.pop()
        return task.result()  # re-raises ProtocolError / connection errors

    async def _receive(
        self, reader: asyncio.StreamReader, parser: asock.AudioSocketParser, session: Any,
        inbound: Resampler | None,
    ) -> str:
        timeout = self.cfg.read_timeout_seconds
        while True:
            try:
                data = await self._read(reader, timeout)
            except asyncio.TimeoutError:
                log.warning("AudioSocket call %s: nothing received for %.1f s; closing", session.call_id, timeout)
                return "timeout"
            if not data:
                parser.receive_eof()
                return "hangup"
            if self._feed(session, parser.receive_data(data), inbound):
                return "hangup"

    async def _tick(self, writer: asyncio.StreamWriter, session: Any, wire_rate: int,
                    outbound: Resampler | None) -> str:
        """Send one frame every 20 ms, drift-free (the schedule is start + n * 20 ms)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        transport = writer.transport
        while True:
            n += 1
            due = start + n * FRAME_SECONDS
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            late = loop.time() - due
            if late > MAX_CATCH_UP_SECONDS:
                skipped = int(late / FRAME_SECONDS)
                n += skipped
                self.pacing.skips += skipped
            self.pacing.note(max(0.0, late))
            pcm = session.pull_frame()
            if outbound is not None:
                pcm = outbound.process(pcm)
            if pcm:
                writer.write(asock.encode_audio(pcm, wire_rate))
            if transport.is_closing():
                return "hangup"
            if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                log.warning("AudioSocket call %s: peer stopped reading (%d bytes queued); closing",
                            session.call_id, transport.get_write_buffer_size())
                return "stalled"

    async def _wait_end(self, session: Any, call: AudioSocketCall) -> str:
        ended = getattr(session, "ended", None)
        waits = [asyncio.ensure_future(call.hangup_requested.wait())]
        if ended is not None:
            waits.append(asyncio.ensure_future(ended.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return "ended"


def new_call_uuid() -> str:
    """A fresh UUID for ``AudioSocket()`` when no conversation exists yet."""
    return str(uuidlib.uuid4())
