"""FreeSWITCH connector: outbound event socket for call control, mod_audio_stream for audio.

The dialplan hands each call to the gateway with ``<action application="socket"
data="127.0.0.1:8084 async full"/>`` (see ``dialplans/freeswitch/``). Per connection:

1. ``connect``: the reply describes the channel (UUID, caller id, dialed number, and the
   conversation id when the channel carries ``voicegw_conversation_id``, as a callback does);
   a call the gateway placed (:mod:`freeswitch_originate`) also carries ``voicegw_callback``
   (the core's nonce) and ``voicegw_number``: its session is outbound (answering-machine
   detection) and presents the nonce, which the core alone accepts or refuses;
2. ``myevents plain``, ``linger`` and ``resume``: this channel's events (DTMF, hangup) come to
   the socket, and closing the socket lets the dialplan go on (a transferred call is not dropped);
3. ``answer``, then ``api uuid_audio_stream <uuid> start ws://<gateway>:8085/media/freeswitch/<uuid>
   mono 8k <metadata>``: mod_audio_stream opens a WebSocket to the gateway and sends the
   caller's audio as binary L16 frames; the gateway sends the bot's audio back on it as binary
   L16 frames, paced at 20 ms by the shared clock (:mod:`media_pacer`). Playing what the
   WebSocket returns needs the mod_audio_stream release with bi-directional streaming
   (v1.0.3 and later); the open-source edition only streams the caller's audio out;
4. the session opens (or resumes) the conversation; its id is written to the channel
   (``uuid_setvar``), so the agent's leg and the CDR carry it;
5. DTMF events and the caller's audio go to the call's media leg (:mod:`media_leg`: held until
   the session has started, flood limit), which hands them to the session; a transfer sets
   ``voicegw_transfer_queue`` and runs ``uuid_transfer <uuid> <queue> XML <agent_context>``;
   when the session hangs up otherwise the gateway lets the module play what it holds
   (``END_GRACE_SECONDS``) and hangs up (``sendmsg`` ``call-command: hangup``); a hangup event
   stops the session.

``EslCall`` is the glue: it runs the event socket and the audio WebSocket and is its media
leg's wire.

Bounded everywhere: the ESL codec's header and body limits, a reply timeout per command,
the audio WebSocket's message size and read timeout, and at most ``freeswitch.max_sessions``
calls at once: the connection of one more is asked ``connect`` (its UUID, for the log line)
and hung up with ``NORMAL_TEMPORARY_FAILURE`` (a SIP caller hears 503, which lets a carrier or
a load balancer try another node), counted in ``voicegw_sessions_refused_total{server="freeswitch"}``.
A failing call is hung up and logged with its UUID; other calls go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any, Callable

from aiohttp import WSMsgType, web

from gateway.config import Settings
from gateway.core.actions import Transfer
from gateway.limits import SessionCap
from gateway.telephony import freeswitch as esl
from gateway.telephony.freeswitch_originate import CALLBACK_VARIABLE, NUMBER_VARIABLE
from gateway.telephony.media_leg import CallTasks, LegEnd, MediaLeg
from gateway.telephony.media_pacer import MediaPacer
from gateway.voice.port import VoiceSessions

log = logging.getLogger(__name__)

READ_CHUNK = 65536
MAX_AUDIO_MESSAGE = 64 * 1024
"""Largest WebSocket message from mod_audio_stream (it sends 20 ms frames: 320 or 640 bytes)."""
MAX_QUEUED_FRAMES = 250
"""Bot frames waiting to be written to the audio WebSocket (5 s): past it the module stopped reading."""
AUDIO_PATH = "/media/freeswitch/{uuid}"
END_GRACE_SECONDS = 0.3
"""After the session's last frame, the wait before hanging up (the module's playback buffer)."""
BUSY_CAUSE = "NORMAL_TEMPORARY_FAILURE"
"""Hangup cause of a call refused because the server holds ``max_sessions`` calls (SIP 503)."""


class EslCall:
    """One outbound event socket connection (one call), its audio WebSocket, its media leg's wire."""

    def __init__(self, server: "FreeSwitchServer", reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.reader, self.writer = reader, writer
        self.parser = esl.EslParser()
        self.peer = writer.get_extra_info("peername")
        self.uuid = "-"
        self.info: esl.ChannelInfo | None = None
        self.replies: deque[asyncio.Future[esl.EslMessage]] = deque()
        self.leg: MediaLeg | None = None
        self.ws: web.WebSocketResponse | None = None
        self.outbox: asyncio.Queue[bytes | None] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self.transferred = False
        self.hung_up = False
        self.reason = ""
        self.closed = asyncio.Event()
        self.silence = b""
        self.finishing: asyncio.Task[None] | None = None

    @property
    def call_id(self) -> str:
        return self.uuid

    @property
    def ready(self) -> bool:  # the session has started
        return self.leg is not None and self.leg.live

    # --- event socket ------------------------------------------------------------------------
    async def run(self) -> None:
        reader = asyncio.create_task(self._read_esl(), name="esl-reader")
        try:
            await self._setup()
            await self.closed.wait()
        except (asyncio.TimeoutError, TimeoutError):
            log.warning("FreeSWITCH call %s from %s: no reply within %.1f s; closing", self.uuid, self.peer,
                        self.server.cfg.command_timeout_seconds)
            self.end("timeout")
        except (ConnectionError, esl.ProtocolError) as exc:
            if not self.reason:
                log.warning("FreeSWITCH call %s from %s: %s; closing", self.uuid, self.peer, exc)
            self.end("error")
        finally:
            self.end(self.reason or "hangup")
            if self.finishing is not None:  # the hangup is written before the socket closes
                await asyncio.wait([self.finishing], timeout=10.0)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self.writer.close()

    async def refuse(self) -> None:
        """The server (or the node) holds its most calls: learn the UUID, hang up busy, close."""
        reader = asyncio.create_task(self._read_esl(), name="esl-reader")
        cfg = self.server.cfg
        try:
            connect = await self.command(esl.encode_command("connect"))
            self.uuid = esl.ChannelInfo.from_connect(connect, cfg.conversation_variable).uuid
            log.warning("FreeSWITCH call %s from %s refused: %s; hanging up with %s", self.uuid, self.peer,
                        self.server.cap.refusal(), BUSY_CAUSE)
            await self.hangup(BUSY_CAUSE)
        except (asyncio.TimeoutError, ConnectionError, esl.ProtocolError) as exc:
            log.info("FreeSWITCH call %s from %s: refusal cut short: %s", self.uuid, self.peer, exc or "timeout")
        finally:
            self.reason = self.reason or "busy"
            self.closed.set()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self.writer.close()

    async def _setup(self) -> None:
        cfg = self.server.cfg
        connect = await self.command(esl.encode_command("connect"))
        self.info = esl.ChannelInfo.from_connect(connect, cfg.conversation_variable)
        self.uuid = self.info.uuid
        self.server.calls[self.uuid] = self
        self.leg = MediaLeg(self, kind="FreeSWITCH", call_id=self.uuid, pacer=self.server.pacer,
                            spawn=self.server.tasks.spawn)
        log.info("FreeSWITCH call %s from %s (caller %s, dialed %s)", self.uuid, self.peer,
                 self.info.caller_id or "-", self.info.dialed or "-")
        await self.command(esl.encode_command("myevents plain"))
        await self.command(esl.encode_command("linger"))
        await self.command(esl.encode_command("resume"))  # closing the socket never drops a transferred call
        answer = await self.command(esl.encode_execute("answer"))
        if not answer.ok:
            raise esl.ProtocolError(f"answer refused: {answer.reply_text}")
        # no spaces: the module splits its arguments on spaces
        meta = json.dumps({"uuid": self.uuid, "caller_id": self.info.caller_id.replace(" ", "")},
                          separators=(",", ":"))
        rate = "16k" if cfg.sample_rate == 16000 else "8k"
        url = self.server.audio_url(self.uuid)
        reply = await self.api(f"uuid_audio_stream {self.uuid} start {url} mono {rate} {meta}")
        if not reply.ok:
            log.error("FreeSWITCH call %s: uuid_audio_stream failed (%s): is mod_audio_stream loaded? "
                      "hanging up", self.uuid, reply.reply_text or "no reply")
            await self.hangup("SERVICE_UNAVAILABLE")
            self.end("no-audio")

    async def command(self, data: bytes) -> esl.EslMessage:
        """Send one command and wait for its reply (replies come in order)."""
        if self.reason:
            raise ConnectionError(f"call already ended ({self.reason})")
        fut: asyncio.Future[esl.EslMessage] = asyncio.get_running_loop().create_future()
        self.replies.append(fut)
        self.writer.write(data)
        return await asyncio.wait_for(fut, self.server.cfg.command_timeout_seconds)

    async def api(self, command: str) -> esl.EslMessage:
        return await self.command(esl.encode_api(command))

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self.hung_up or self.writer.is_closing():
            return
        self.hung_up = True
        try:
            await self.command(esl.encode_hangup(cause))
        except (asyncio.TimeoutError, ConnectionError) as exc:
            log.info("FreeSWITCH call %s: hangup not confirmed: %s", self.uuid, exc or "timeout")

    async def _read_esl(self) -> None:
        try:
            while True:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    self.parser.receive_eof()
                    break
                for msg in self.parser.receive_data(data):
                    self._dispatch(msg)
        except esl.ProtocolError as exc:
            log.warning("FreeSWITCH call %s from %s: protocol error: %s; closing", self.uuid, self.peer, exc)
            self.end("protocol-error")
        except ConnectionError:
            pass
        self.end(self.reason or "hangup")

    def _dispatch(self, msg: esl.EslMessage) -> None:
        ctype = msg.content_type
        if ctype in ("command/reply", "api/response"):
            while self.replies:
                fut = self.replies.popleft()
                if not fut.done():
                    fut.set_result(msg)
                    return
            log.debug("FreeSWITCH call %s: reply nobody waited for: %s", self.uuid, msg.reply_text)
        elif ctype == "text/event-plain":
            self._event(msg.event())
        elif ctype == "text/disconnect-notice":
            self.end("hangup")

    def _event(self, event: esl.EslEvent) -> None:
        name = event.name
        if name == "DTMF":
            digit = event.get("DTMF-Digit")
            if self.leg is not None and digit:
                self.leg.caller_key(digit)
        elif name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
            self.hung_up = True
            self.end("hangup")

    # --- audio WebSocket (mod_audio_stream) ----------------------------------------------------
    async def serve_audio(self, ws: web.WebSocketResponse) -> None:
        server = self.server
        cfg = server.cfg
        assert self.info is not None and self.leg is not None
        self.ws = ws
        if self.reason:
            return  # the call ended before its audio arrived
        # a call the gateway placed (freeswitch_originate) carries the core's nonce; the core checks it
        callback = self.info.variables.get(CALLBACK_VARIABLE, "")
        far_end = self.info.variables.get(NUMBER_VARIABLE, "") if callback else ""
        try:
            session = server.pipeline.session(
                call_id=self.uuid, sample_rate=cfg.sample_rate, caller_id=far_end or self.info.caller_id,
                dialed=self.info.dialed, conversation_id=self.info.conversation_id,
                outbound=bool(callback), callback=callback, admitted=True)  # slot taken by server.cap
        except Exception:  # the pipeline refused the call: end this call only
            log.exception("FreeSWITCH call %s: no voice session; hanging up", self.uuid)
            self.end("error")
            return
        self.silence = bytes(session.frame_bytes)
        writer = asyncio.create_task(self._write_audio(ws), name="fs-audio-writer")
        reader = asyncio.create_task(self._read_audio(ws), name="fs-audio-reader")
        self.leg.begin(session)
        try:
            await self.closed.wait()
        finally:
            reader.cancel()
            try:
                self.outbox.put_nowait(None)
            except asyncio.QueueFull:
                writer.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)

    async def _read_audio(self, ws: web.WebSocketResponse) -> None:
        timeout = self.server.cfg.read_timeout_seconds
        leg = self.leg
        assert leg is not None
        while not self.reason:
            try:
                msg = await ws.receive(timeout=timeout)
            except (asyncio.TimeoutError, TimeoutError):
                log.warning("FreeSWITCH call %s: no audio for %.1f s; hanging up", self.uuid, timeout)
                self.end("timeout")
                return
            if msg.type == WSMsgType.BINARY:
                leg.caller_audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                log.debug("FreeSWITCH call %s: stream text %s", self.uuid, msg.data[:200])
            elif msg.type == WSMsgType.ERROR:
                log.warning("FreeSWITCH call %s: audio stream error: %s; hanging up", self.uuid, ws.exception())
                self.end("protocol-error")
                return
            else:
                log.info("FreeSWITCH call %s: audio stream closed", self.uuid)
                self.end("audio-closed")
                return

    async def _write_audio(self, ws: web.WebSocketResponse) -> None:
        while True:
            frame = await self.outbox.get()
            if frame is None or ws.closed:
                return
            try:
                await ws.send_bytes(frame)
            except (ConnectionError, RuntimeError):
                self.end("audio-closed")
                return

    async def _tag(self, conversation_id: str) -> None:
        try:
            await self.api(f"uuid_setvar {self.uuid} {self.server.cfg.conversation_variable} {conversation_id}")
        except (asyncio.TimeoutError, ConnectionError) as exc:
            log.info("FreeSWITCH call %s: conversation id not set on the channel: %s", self.uuid, exc or "timeout")

    # --- ending --------------------------------------------------------------------------------
    def end(self, reason: str) -> None:
        """End the call once (``reason``: how); the media leg stops the session."""
        if self.leg is not None:
            self.leg.close(reason)
        elif not self.reason:
            self.close(LegEnd(reason))

    # --- the leg's wire (gateway.telephony.media_leg.LegWire) ----------------------------------
    def play(self, pull: Callable[[], bytes]) -> None:
        pcm = pull()
        if self.ws is None or not pcm or pcm == self.silence:
            return
        try:
            self.outbox.put_nowait(pcm)
        except asyncio.QueueFull:
            log.warning("FreeSWITCH call %s: audio stream stopped reading; hanging up", self.uuid)
            self.end("stalled")

    def clear(self) -> None:
        """Nothing to clear: frames go out in real time; the module holds a few at most."""

    def opened(self, conversation_id: str) -> None:
        """Write the conversation id to the channel (the agent's leg and the CDR carry it)."""
        if conversation_id and not self.reason:
            self.server.tasks.spawn(self._tag(conversation_id))

    async def transfer(self, conversation_id: str, action: Transfer) -> bool:
        cfg = self.server.cfg
        queue = "".join(c for c in action.queue if c.isalnum() or c in "_-+") or "agents"
        setvars = f"voicegw_transfer_queue={queue};{cfg.conversation_variable}={conversation_id}"
        try:
            await self.api(f"uuid_setvar_multi {self.uuid} {setvars}")
            reply = await self.api(f"uuid_transfer {self.uuid} {queue} XML {cfg.agent_context}")
        except (asyncio.TimeoutError, ConnectionError) as exc:
            log.warning("FreeSWITCH call %s: transfer failed: %s", self.uuid, exc or "no reply")
            return False
        if not reply.ok:
            log.warning("FreeSWITCH call %s: uuid_transfer refused: %s", self.uuid, reply.reply_text)
            return False
        self.transferred = True
        log.info("FreeSWITCH call %s transferred to %s@%s", self.uuid, queue, cfg.agent_context)
        return True

    def hanging_up(self) -> float:
        return END_GRACE_SECONDS  # a moment for mod_audio_stream to play what it holds

    def played_out(self) -> bool:
        return False

    def close(self, end: LegEnd) -> None:
        """Hang up (unless transferred, already gone or misbehaving), close the audio stream."""
        self.reason = end.reason
        server = self.server
        if server.calls.get(self.uuid) is self:
            del server.calls[self.uuid]
        self.closed.set()
        for fut in self.replies:
            if not fut.done():
                fut.set_exception(ConnectionError(f"call ended ({end.reason})"))
        if self.ws is not None:
            server.ended_calls += 1
        self.finishing = server.tasks.spawn(self._finish(end))

    async def _finish(self, end: LegEnd) -> None:
        if not self.transferred and not self.hung_up and end.reason != "protocol-error":
            self.hung_up = True
            try:
                self.writer.write(esl.encode_hangup())
            except (ConnectionError, RuntimeError):
                pass
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()


class FreeSwitchServer:
    """The outbound event socket server and the audio WebSocket server."""

    def __init__(self, settings: Settings, pipeline: VoiceSessions):
        self.settings = settings
        self.cfg = settings.freeswitch
        self.pipeline = pipeline
        self.calls: dict[str, EslCall] = {}
        self.pacer = MediaPacer("freeswitch")
        self.cap = SessionCap("freeswitch", self.cfg.max_sessions, within=pipeline.calls)
        self.ended_calls = 0
        self._esl: asyncio.base_events.Server | None = None
        self._runner: web.AppRunner | None = None
        self.audio_port = 0
        self.tasks = CallTasks()

    @property
    def port(self) -> int:
        if self._esl is None or not self._esl.sockets:
            return 0
        return int(self._esl.sockets[0].getsockname()[1])

    def audio_url(self, uuid: str) -> str:
        base = self.cfg.audio_url.rstrip("/") or f"ws://{self.cfg.audio_host}:{self.audio_port}"
        return base + AUDIO_PATH.format(uuid=uuid)

    async def start(self) -> "FreeSwitchServer":
        app = web.Application()
        app.router.add_get(AUDIO_PATH, self._audio)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.audio_host, self.cfg.audio_port)
        await site.start()
        self.audio_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._esl = await asyncio.start_server(self._connection, self.cfg.host, self.cfg.port,
                                               limit=esl.MAX_HEADER_BYTES)
        log.info("FreeSWITCH event socket on %s:%d, audio WebSocket on %s", self.cfg.host, self.port,
                 self.audio_url("<uuid>"))
        return self

    def register_metrics(self, metrics: Any) -> None:
        """``voicegw_sessions_refused_total{server="freeswitch"}`` on ``/metrics``."""
        self.cap.register_metrics(metrics)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        call = EslCall(self, reader, writer)
        if not self.cap.admit():
            await call.refuse()
            return
        try:
            await call.run()
        except Exception:  # one call's failure must not reach the server
            log.exception("FreeSWITCH call %s: failed", call.uuid)
            call.end("error")
        finally:
            self.cap.release()

    async def _audio(self, request: web.Request) -> web.StreamResponse:
        uuid = request.match_info["uuid"]
        call = self.calls.get(uuid)
        if call is None or call.ws is not None:
            log.warning("FreeSWITCH audio stream for unknown call %s from %s refused", uuid[:64], request.remote)
            raise web.HTTPNotFound(text="no such call\n")
        ws = web.WebSocketResponse(max_msg_size=MAX_AUDIO_MESSAGE)
        await ws.prepare(request)
        try:
            await call.serve_audio(ws)
        except Exception:
            log.exception("FreeSWITCH call %s: audio stream failed", uuid)
            call.end("error")
        return ws

    async def close(self) -> None:
        """Stop listening, hang up every live call, wait for the sessions to stop."""
        if self._esl is not None:
            self._esl.close()
        for call in list(self.calls.values()):
            call.end("shutdown")
        await self.pacer.close()
        await self.tasks.wait()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._esl = None


async def start_freeswitch_channel(settings: Settings, core: Any, pipeline: VoiceSessions) -> FreeSwitchServer:
    """Start the FreeSWITCH connector for ``voicegw serve`` (``settings.freeswitch``)."""
    return await FreeSwitchServer(settings, pipeline).start()
