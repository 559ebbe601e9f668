"""Twilio Media Streams server: one :class:`VoiceSession` per bidirectional stream.

Give the Twilio number's Voice webhook ``POST https://gateway.example.com/twilio/voice``
(``twilio_media.voice_path``). The gateway checks ``X-Twilio-Signature`` and answers::

    <Response>
      <Connect action="https://gateway.example.com/media/twilio/after">
        <Stream url="wss://gateway.example.com/media/twilio">
          <Parameter name="from" value="+15551234567"/>
          <Parameter name="to" value="+15550199"/>
          <Parameter name="call_sid" value="CA..."/>
          <Parameter name="voicegw_sig" value="...signed expiry, nonce and hash of the above..."/>
        </Stream>
      </Connect>
    </Response>

Who may open a stream and which parameters count is :mod:`twilio_signing`: beyond loopback
every Twilio route needs ``twilio.auth_token`` (else 403), and a stream's ``from``/``to``/
``conversation_id``/``outbound`` reach the session only when the gateway signed them for this
CallSid, once, before they expired. Unsigned parameters are refused, except on loopback without
a token (local development), where the stream is served as an anonymous caller.

Per stream (a thin layer around :mod:`gateway.telephony.twilio_media`):

* ``connected`` then ``start`` must arrive within ``start_timeout_seconds``; the parameters are
  checked (a refusal closes the stream with 1008, one log line with the CallSid and the reason,
  and ``voicegw_twilio_refused_total{reason}``), then the session is created with the
  signed caller id, dialed number and conversation (resumed when it exists);
* caller audio (base64 mu-law, 8 kHz) is decoded to PCM16 and ``dtmf`` keys taken: both go to
  the call's media leg (:mod:`media_leg`: held while the conversation opens, flood limit), which
  hands them to the session; ``stop`` or a WebSocket close ends the call;
* the shared 20 ms tick (:mod:`media_pacer`) sends each frame of bot audio as one ``media``
  message of 160 mu-law bytes (frames of pure silence are not sent: Twilio plays silence by
  itself);
* every time the caller cuts the bot short (speech over it, or a key that stops a prompt) a
  ``clear`` drops what Twilio still buffers, before the next frame;
* when the session hangs up (goodbye played, or a transfer), the gateway sends a ``mark`` and,
  once Twilio echoes it (what Twilio buffered has played) or after 2 s, closes the WebSocket and
  Twilio goes on with the ``<Connect action>`` URL: ``/media/twilio/after`` answers with
  ``<Dial>`` to the number configured for the transfer's queue, else ``<Hangup/>``.

``_Stream`` is the codec's glue: it reads the WebSocket and is its media leg's wire.

Every stream is bounded: message size (a larger one closes the stream with 1009), the schema
(a message that is not a Media Streams message closes it with 1008), read timeouts (Twilio
sends media every 20 ms for the whole call), and the send queue (a peer that stops reading is
cut off). A failure ends its own stream with one log line carrying the call id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiohttp import WSMsgType, web

from gateway.config import Settings
from gateway.core.actions import Transfer
from gateway.links import LinkSigner
from gateway.telephony import twilio_media as tm
from gateway.telephony import twilio_signing as ts
from gateway.telephony.media_leg import CallTasks, LegEnd, MediaLeg
from gateway.telephony.media_pacer import MediaPacer
from gateway.telephony.twilio_calls import TransferBook, TwilioMediaSettings, after_stream_twiml, transfer_target
from gateway.voice.audio import ulaw_decode, ulaw_encode
from gateway.voice.port import CallAudio, CallsFull, VoiceSessions
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

END_MARK = "voicegw-end"
END_MARK_WAIT_SECONDS = 2.0
"""At the end of the call the gateway sends this mark and closes once Twilio echoes it (the
goodbye has played out of Twilio's buffer), or after this long."""
CLOSE_CODES = {"protocol-error": 1008, "refused": 1008, "too-big": 1009, "error": 1011, "stalled": 1011,
               "busy": 1013}
"""WebSocket close code by how the stream ended (RFC 6455 7.4.1); 1000 otherwise."""


class _Stream:
    """One Media Streams WebSocket: codec in, media leg out; the leg's wire."""

    def __init__(self, server: "TwilioMediaServer", ws: web.WebSocketResponse, peer: str):
        self.server = server
        self.ws = ws
        self.peer = peer
        self.parser = tm.TwilioMediaParser(server.cfg.max_message_bytes)
        self.call_id = "-"
        self.call_sid = ""
        self.stream_sid = ""
        self.session: CallAudio | None = None
        self.leg: MediaLeg | None = None
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue(server.cfg.max_queued_frames)
        self.frames_sent = 0
        self.clears_sent = 0
        self.end_mark_played = False
        self.reason = ""
        self.done = asyncio.Event()
        self.silence = b""

    @property
    def ready(self) -> bool:
        """The session has started: audio flows both ways."""
        return self.leg is not None and self.leg.live

    async def run(self) -> None:
        writer = asyncio.create_task(self._write(), name="twilio-writer")
        try:
            await self._read()
        finally:
            self.end(self.reason or "hangup")
            try:
                self.outbox.put_nowait(None)
            except asyncio.QueueFull:
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            if not self.ws.closed:
                await self.ws.close(code=CLOSE_CODES.get(self.reason, 1000), message=self.reason.encode()[:120])

    async def _read(self) -> None:
        cfg = self.server.cfg
        while not self.reason:
            timeout = cfg.read_timeout_seconds if self.parser.started else cfg.start_timeout_seconds
            try:
                msg = await self.ws.receive(timeout=timeout)
            except asyncio.TimeoutError:
                log.warning("Twilio call %s from %s: nothing received for %.1f s; closing",
                            self.call_id, self.peer, timeout)
                self.reason = "timeout"
                return
            if msg.type == WSMsgType.TEXT:
                try:
                    message = self.parser.receive_text(msg.data)
                except tm.ProtocolError as exc:
                    log.warning("Twilio call %s from %s: protocol error: %s; closing", self.call_id, self.peer, exc)
                    self.reason = "protocol-error"
                    return
                await self._handle(message)
            elif msg.type == WSMsgType.BINARY:
                log.warning("Twilio call %s from %s: binary message (Media Streams send JSON text); closing",
                            self.call_id, self.peer)
                self.reason = "protocol-error"
                return
            elif msg.type == WSMsgType.ERROR:
                exc = self.ws.exception()
                too_big = "size" in str(exc).lower() or "too big" in str(exc).lower()
                log.warning("Twilio call %s from %s: %s; closing", self.call_id, self.peer,
                            f"message larger than {cfg.max_message_bytes} bytes" if too_big else exc)
                self.reason = "too-big" if too_big else "protocol-error"
                return
            else:  # CLOSE, CLOSING, CLOSED
                self.reason = self.reason or "hangup"
                return

    async def _handle(self, message: tm.Message) -> None:
        leg = self.leg
        if isinstance(message, tm.Media):
            if leg is not None and message.track in ("inbound", "inbound_track"):
                leg.caller_audio(ulaw_decode(message.payload))
        elif isinstance(message, tm.Start):
            await self._begin(message)
        elif isinstance(message, tm.Dtmf):
            if leg is not None:
                leg.caller_key(message.digit)
        elif isinstance(message, tm.Stop):
            log.info("Twilio call %s: stream stopped by Twilio", self.call_id)
            self.reason = "hangup"
        elif isinstance(message, tm.Mark):
            if message.name == END_MARK:
                self.end_mark_played = True
            log.debug("Twilio call %s: mark %s played", self.call_id, message.name)

    async def _begin(self, start: tm.Start) -> None:
        server = self.server
        self.stream_sid, self.call_sid = start.stream_sid, start.call_sid
        self.call_id = start.call_sid or start.stream_sid
        if len(server.streams) >= server.cfg.max_streams:
            log.warning("Twilio call %s: %d streams already open; refused", self.call_id, len(server.streams))
            self.reason = "busy"
            return
        claims = await server.gate.check(start, self.call_id, self.peer)
        if claims is None:
            self.reason = "refused"
            return
        if server.pipeline is None:
            self.reason = "error"
            return
        try:
            self.session = server.pipeline.session(
                call_id=self.call_id, sample_rate=tm.SAMPLE_RATE, caller_id=claims.caller, dialed=claims.dialed,
                conversation_id=claims.conversation_id, outbound=claims.outbound,
            )
        except CallsFull as exc:  # the node holds voice.max_calls calls
            log.warning("Twilio %s; stream closed (busy)", exc)
            self.reason = "busy"
            return
        except Exception:  # the pipeline refused the call: end this stream only
            log.exception("Twilio call %s: no voice session; closing", self.call_id)
            self.reason = "error"
            return
        self.silence = bytes(self.session.frame_bytes)
        server.streams[self.call_id] = self
        self.leg = MediaLeg(self, kind="Twilio", call_id=self.call_id, pacer=server.pacer, spawn=server.tasks.spawn,
                            max_held_seconds=server.cfg.max_pending_frames * 0.02)
        log.info("Twilio call %s started (stream %s, %s parameters, conversation %s)", self.call_id,
                 self.stream_sid, "signed" if claims.signed else "anonymous", claims.conversation_id or "new")
        self.leg.begin(self.session)

    async def _write(self) -> None:
        while True:
            text = await self.outbox.get()
            if text is None or self.ws.closed:
                return
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError) as exc:
                log.info("Twilio call %s: send failed: %s", self.call_id, exc)
                self.end("hangup")
                return

    def _queue(self, text: str) -> None:
        try:
            self.outbox.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("Twilio call %s: peer stopped reading (%d messages queued); closing",
                        self.call_id, self.outbox.qsize())
            self.end("stalled")

    def end(self, reason: str) -> None:
        """End the stream once (``reason``: how; the media leg ends the call, if it has one)."""
        if self.leg is not None:
            self.leg.close(reason)
        elif not self.done.is_set():
            self.done.set()
            self.reason = self.reason or reason

    # --- the leg's wire (gateway.telephony.media_leg.LegWire) ----------------------------------
    def play(self, pull: Callable[[], bytes]) -> None:
        pcm = pull()
        if pcm and pcm != self.silence:
            self._queue(tm.encode_media(self.stream_sid, ulaw_encode(pcm)))
            self.frames_sent += 1

    def clear(self) -> None:
        """The caller cut the bot short: Twilio drops the audio it still buffers."""
        self._queue(tm.encode_clear(self.stream_sid))
        self.clears_sent += 1

    def opened(self, conversation_id: str) -> None:
        """Nothing to tag: the stream's conversation is the gateway's own."""

    async def transfer(self, conversation_id: str, action: Transfer) -> bool:
        """A stream cannot move the call: the ``<Connect action>`` after it dials the target."""
        target = transfer_target(self.server.cfg, action)
        if not target:
            log.warning("Twilio call %s: no transfer number for queue %r (twilio_media.transfer_numbers)",
                        self.call_id, action.queue)
            return False
        self.server.transfers.remember(self.call_sid or self.call_id, target)
        return True

    def hanging_up(self) -> float:
        """Let Twilio play what it buffers: it echoes this mark once it has."""
        self._queue(tm.encode_mark(self.stream_sid, END_MARK))
        return END_MARK_WAIT_SECONDS

    def played_out(self) -> bool:
        return self.end_mark_played

    def close(self, end: LegEnd) -> None:
        """End the stream once: close the socket (the read loop ends with it)."""
        if self.done.is_set():
            return
        self.done.set()
        self.reason = self.reason or end.reason
        server = self.server
        if server.streams.get(self.call_id) is self:
            del server.streams[self.call_id]
        if (end.by_session or end.reason == "stalled") and not self.ws.closed:
            server.tasks.spawn(self.ws.close(code=1000 if end.by_session else 1011))
        server.ended_calls += 1


class TwilioMediaServer:
    """The voice webhook, the ``/media/twilio`` WebSocket route and its ``/after`` TwiML route."""

    def __init__(self, settings: Settings, pipeline: VoiceSessions | None = None,
                 cfg: TwilioMediaSettings | None = None, *, signer: LinkSigner | None = None,
                 metrics: Metrics | None = None):
        self.settings = settings
        self.cfg = cfg or settings.twilio_media
        self.pipeline = pipeline
        self.metrics = metrics or Metrics()
        self.pacer = MediaPacer("twilio")
        self.streams: dict[str, _Stream] = {}
        self.ended_calls = 0
        self.transfers = TransferBook()
        self.tasks = CallTasks()
        self.gate = ts.TwilioGate(settings, signer, self.metrics)

    def add_routes(self, app: web.Application) -> None:
        """Register the routes on ``app`` and close the streams on its cleanup."""
        app.router.add_post(self.cfg.voice_path, self.voice_webhook)
        app.router.add_get(self.cfg.path, self.handle_ws)
        app.router.add_post(self.cfg.path.rstrip("/") + "/after", self.after_stream)
        app.on_shutdown.append(lambda _app: self.close())

    async def voice_webhook(self, request: web.Request) -> web.Response:
        """Twilio's incoming-call webhook: ``<Connect><Stream>`` with signed parameters."""
        return await self.gate.voice_webhook(request, self.cfg, ready=self.pipeline is not None and self.cfg.enabled)

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """One Media Streams connection from Twilio."""
        peer = request.remote or "-"
        self.gate.authorize(request, "stream", ts.public_url(self.settings, request, websocket=True), {})
        if self.pipeline is None or not self.cfg.enabled:
            log.warning("Twilio stream from %s refused: no voice pipeline is running", peer)
            raise web.HTTPServiceUnavailable(text="voice is not enabled on this gateway\n")
        ws = web.WebSocketResponse(max_msg_size=self.cfg.max_message_bytes, autoping=True)
        await ws.prepare(request)
        stream = _Stream(self, ws, peer)
        try:
            await stream.run()
        except Exception:  # one stream's failure must not reach aiohttp's error page or others
            log.exception("Twilio call %s: stream failed", stream.call_id)
            stream.end("error")
        return ws

    async def after_stream(self, request: web.Request) -> web.Response:
        """``<Connect action>``: TwiML for what follows the stream (the transfer, or hang up)."""
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.gate.authorize(request, "after-stream callback", ts.public_url(self.settings, request), form)
        call_sid = form.get("CallSid", "")[:64]
        target = self.transfers.pop(call_sid)
        if target:
            log.info("Twilio call %s: transferred to %s", call_sid, target)
        return web.Response(text=after_stream_twiml(target), content_type="text/xml")

    async def close(self) -> None:
        """End every live stream and wait for their sessions to stop."""
        for stream in list(self.streams.values()):
            stream.end("shutdown")
            if not stream.ws.closed:
                await stream.ws.close(code=1001)
        await self.pacer.close()
        await self.tasks.wait()


TWILIO_MEDIA: web.AppKey[TwilioMediaServer] = web.AppKey("voicegw_twilio_media", TwilioMediaServer)


def add_twilio_media_routes(app: web.Application, settings: Settings, pipeline: VoiceSessions | None = None, *,
                            signer: LinkSigner | None = None, metrics: Metrics | None = None) -> TwilioMediaServer:
    """Register ``/twilio/voice`` and ``/media/twilio`` on the gateway's web app (``signer``: the
    links signer, which signs and checks stream parameters); the pipeline may be attached later."""
    server = TwilioMediaServer(settings, pipeline, signer=signer, metrics=metrics)
    server.add_routes(app)
    app[TWILIO_MEDIA] = server
    return server


def attach_pipeline(app: web.Application, pipeline: VoiceSessions) -> None:
    """Give the Media Streams route the process's voice pipeline (``voicegw serve`` does this)."""
    app[TWILIO_MEDIA].pipeline = pipeline
