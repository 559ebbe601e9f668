"""FreeSWITCH: the event socket codec on ESL's documented format, and the outbound socket server
with its mod_audio_stream WebSocket over real TCP, FreeSWITCH's side played by the test.

The bytes follow mod_event_socket: header blocks ended by an empty line, ``Content-Length``
bodies, ``command/reply`` with ``Reply-Text``, ``api/response`` with the result as body, plain
events (URL-encoded values) inside ``text/event-plain``, and ``text/disconnect-notice``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from urllib.parse import quote

import aiohttp
import pytest

from gateway.config import load_settings
from gateway.core.actions import Transfer
from gateway.telephony import freeswitch as esl
from gateway.telephony.freeswitch_server import FreeSwitchServer
from tests.telephony.fakes import FakePipeline
from tests.telephony.helpers import until
from tests.telephony.written_peers import esl_commands

pytestmark = pytest.mark.timeout(60)

UUID = "5a4b8a2e-0d7c-4a55-9c3f-1f0e2d3c4b5a"


def connect_reply(uuid: str, conversation: str = "") -> bytes:
    headers = [
        ("Content-Type", "command/reply"), ("Reply-Text", "+OK"), ("Socket-Mode", "async"), ("Control", "full"),
        ("Event-Name", "CHANNEL_DATA"), ("Unique-ID", uuid), ("Channel-Name", "sofia/internal/5550100@10.0.0.5"),
        ("Caller-Caller-ID-Name", "Jane Doe"), ("Caller-Caller-ID-Number", "5550100"),
        ("Caller-Destination-Number", "1000"), ("Answer-State", "ringing"), ("variable_sip_from_user", "5550100"),
    ]
    if conversation:
        headers.append(("variable_voicegw_conversation_id", conversation))
    return "".join(f"{k}: {quote(v, safe='+-_.~:/')}\n" for k, v in headers).encode() + b"\n"


def plain_event(fields: dict[str, str], body: bytes = b"") -> bytes:
    text = "".join(f"{k}: {quote(v)}\n" for k, v in fields.items())
    if body:
        text += f"Content-Length: {len(body)}\n"
    inner = text.encode() + b"\n" + body
    return f"Content-Length: {len(inner)}\nContent-Type: text/event-plain\n\n".encode() + inner


def reply(text: str = "+OK") -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def api_response(text: str) -> bytes:
    body = text.encode()
    return f"Content-Type: api/response\nContent-Length: {len(body)}\n\n".encode() + body


# --- codec ------------------------------------------------------------------------------------
def test_connect_reply_describes_the_channel_with_decoded_values():
    msgs = esl.EslParser().receive_data(connect_reply(UUID, "conv-9"))
    assert len(msgs) == 1 and msgs[0].ok
    info = esl.ChannelInfo.from_connect(msgs[0], "voicegw_conversation_id")
    assert (info.uuid, info.caller_id, info.dialed, info.conversation_id) == (UUID, "5550100", "1000", "conv-9")
    assert msgs[0].headers["Caller-Caller-ID-Name"] == "Jane Doe"
    assert info.variables["sip_from_user"] == "5550100"


def test_replies_and_events_parse_whatever_the_read_boundaries():
    dtmf = plain_event({"Event-Name": "DTMF", "Unique-ID": UUID, "DTMF-Digit": "5", "DTMF-Duration": "2000"})
    custom = plain_event({"Event-Name": "CUSTOM", "Event-Subclass": "mod_audio_stream::json"}, b'{"a": 1}')
    stream = (reply("+OK Events Enabled") + api_response("+OK Success\n") + dtmf + custom
              + b"Content-Type: text/disconnect-notice\nContent-Length: 22\n\nDisconnected, goodbye.")
    for step in (1, 7, len(stream)):
        parser = esl.EslParser()
        msgs = []
        for i in range(0, len(stream), step):
            msgs += parser.receive_data(stream[i:i + step])
        parser.receive_eof()
        assert [m.content_type for m in msgs] == ["command/reply", "api/response", "text/event-plain",
                                                  "text/event-plain", "text/disconnect-notice"]
        assert msgs[0].reply_text == "+OK Events Enabled" and msgs[1].reply_text == "+OK Success" and msgs[1].ok
        ev = msgs[2].event()
        assert ev.name == "DTMF" and ev.get("DTMF-Digit") == "5" and ev.get("Unique-ID") == UUID
        ev = msgs[3].event()
        assert ev.subclass == "mod_audio_stream::json" and ev.body == b'{"a": 1}'
        assert msgs[4].body == b"Disconnected, goodbye."


@pytest.mark.parametrize("data, error", [
    (b"X" * (esl.MAX_HEADER_BYTES + 10), "header block longer"),
    (b"Content-Length: 99999999\n\n", "limit"),
    (b"Content-Length: -5\n\n", "bad Content-Length"),
    (b"this is not a header\n\n", "bad header line"),
    (b"Content-Type: \xff\xfe\n\n", "not UTF-8"),
])
def test_bad_input_is_a_protocol_error_and_the_parser_stays_failed(data, error):
    parser = esl.EslParser()
    with pytest.raises(esl.ProtocolError, match=error):
        parser.receive_data(data)
    with pytest.raises(esl.ProtocolError, match="already failed"):
        parser.receive_data(reply())


def test_eof_in_the_middle_of_a_message_is_an_error():
    parser = esl.EslParser()
    parser.receive_data(b"Content-Type: api/response\nContent-Length: 10\n\n+OK")
    with pytest.raises(esl.ProtocolError, match="middle"):
        parser.receive_eof()


def test_commands_are_encoded_as_mod_event_socket_reads_them():
    assert esl.encode_command("connect") == b"connect\n\n"
    assert esl.encode_execute("answer") == b"sendmsg\ncall-command: execute\nexecute-app-name: answer\nevent-lock: true\n\n"
    assert esl.encode_execute("set", "a=b", lock=False) == \
        b"sendmsg\ncall-command: execute\nexecute-app-name: set\nexecute-app-arg: a=b\n\n"
    assert esl.encode_hangup() == b"sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n"
    assert esl.encode_api("uuid_transfer x 100 XML default") == b"api uuid_transfer x 100 XML default\n\n"
    with pytest.raises(ValueError, match="line break"):
        esl.encode_api("uuid_setvar x v 1\n\napi shutdown")  # no command injection


# --- server over real TCP ---------------------------------------------------------------------
class FakeFreeSwitch:
    """FreeSWITCH's side of one call: the outbound socket and mod_audio_stream's WebSocket."""

    def __init__(self, uuid: str = UUID, conversation: str = "", api: dict[str, str] | None = None):
        self.uuid = uuid
        self.conversation = conversation
        self.api = api or {}
        self.commands: list[str] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.http = aiohttp.ClientSession()
        self.received: list[tuple[float, bytes]] = []
        self.closed = asyncio.Event()
        self.ws_ready = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    async def call(self, port: int) -> "FakeFreeSwitch":
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.tasks.append(asyncio.create_task(self._answer()))
        return self

    async def _answer(self) -> None:
        try:
            async for cmd in esl_commands(self.reader):
                self.commands.append(cmd)
                if cmd == "connect":
                    self.writer.write(connect_reply(self.uuid, self.conversation))
                elif cmd.startswith("api "):
                    name = cmd.split()[1]
                    self.writer.write(api_response(self.api.get(name, "+OK Success\n")))
                    if name == "uuid_audio_stream" and "-ERR" not in self.api.get(name, ""):
                        self.tasks.append(asyncio.create_task(self._stream(cmd)))
                else:
                    self.writer.write(reply("+OK"))
        except ConnectionError:
            pass
        self.closed.set()

    async def _stream(self, cmd: str) -> None:
        _, _, uuid, _, url, mix, rate, meta = cmd.split(" ", 7)
        assert (uuid, mix, rate) == (self.uuid, "mono", "8k") and json.loads(meta)["uuid"] == self.uuid
        self.ws = await self.http.ws_connect(url)
        await self.ws.send_str(meta)  # mod_audio_stream sends the metadata first
        self.ws_ready.set()
        loop = asyncio.get_running_loop()
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.received.append((loop.time(), msg.data))

    def event(self, fields: dict[str, str]) -> None:
        self.writer.write(plain_event({"Unique-ID": self.uuid, **fields}))

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()
        await self.http.close()
        self.writer.close()


@pytest.fixture
async def freeswitch(tmp_path):
    made = []

    async def make(pipeline, **cfg):
        settings = load_settings(environ={}, overrides={
            "data_dir": str(tmp_path),
            "freeswitch": {"enabled": True, "port": 0, "audio_port": 0, **cfg}})
        server = await FreeSwitchServer(settings, pipeline).start()
        made.append(server)
        return server

    yield make
    for server in made:
        await server.close()


def frames(n: int, value: int = 1000) -> list[bytes]:
    return [struct.pack("<160h", *([value + i] * 160)) for i in range(n)]


async def test_a_call_is_answered_streamed_and_hung_up_when_the_session_ends(freeswitch):
    tone = b"".join(frames(25, 3000))  # 0.5 s of bot audio
    pipeline = FakePipeline(bot_audio=tone)
    server = await freeswitch(pipeline)
    fs = await FakeFreeSwitch(conversation="conv-42").call(server.port)
    try:
        await asyncio.wait_for(fs.ws_ready.wait(), 10)
        await pipeline.created.wait()
        session = pipeline.sessions[0]
        assert session.call_id == UUID and session.sample_rate == 8000
        assert (session.kwargs["caller_id"], session.kwargs["dialed"], session.kwargs["conversation_id"]) == \
            ("5550100", "1000", "conv-42")
        caller = frames(10)
        for f in caller:
            await fs.ws.send_bytes(f)
        fs.event({"Event-Name": "DTMF", "DTMF-Digit": "7"})
        await until(lambda: bytes(session.audio) == b"".join(caller) and session.dtmf == ["7"])
        await until(lambda: len(fs.received) >= 25)
        assert b"".join(f for _, f in fs.received[:25]) == tone and all(len(f) == 320 for _, f in fs.received)
        span = fs.received[24][0] - fs.received[0][0]
        assert span >= 24 * 0.02 * 0.8, span  # paced, not a burst
        await until(lambda: any(c.startswith("api uuid_setvar ") for c in fs.commands))
        session.hang_up()
        await until(lambda: any("call-command: hangup" in c for c in fs.commands))
        await asyncio.wait_for(session.stopped_event.wait(), 5)
    finally:
        await fs.close()
    url = f"ws://127.0.0.1:{server.audio_port}/media/freeswitch/{UUID}"
    assert fs.commands[:6] == ["connect", "myevents plain", "linger", "resume",
                               "sendmsg\ncall-command: execute\nexecute-app-name: answer\nevent-lock: true",
                               f'api uuid_audio_stream {UUID} start {url} mono 8k {{"uuid":"{UUID}","caller_id":"5550100"}}']
    assert f"api uuid_setvar {UUID} voicegw_conversation_id {session.conversation_id}" in fs.commands


async def test_transfer_sets_the_queue_and_moves_the_channel_without_hanging_up(freeswitch):
    pipeline = FakePipeline()
    server = await freeswitch(pipeline, agent_context="agents-ctx")
    fs = await FakeFreeSwitch().call(server.port)
    try:
        await asyncio.wait_for(fs.ws_ready.wait(), 10)
        await pipeline.created.wait()
        session = pipeline.sessions[0]
        await until(lambda: server.calls.get(UUID) is not None and server.calls[UUID].ready)
        assert await session.request_transfer("conv-1", Transfer(queue="billing")) is True
        session.hang_up("transferred")
        await asyncio.wait_for(session.stopped_event.wait(), 5)
        assert session.stopped == "transferred"
    finally:
        await fs.close()
    assert f"api uuid_setvar_multi {UUID} voicegw_transfer_queue=billing;voicegw_conversation_id=conv-1" in fs.commands
    assert f"api uuid_transfer {UUID} billing XML agents-ctx" in fs.commands
    assert not any("call-command: hangup" in c for c in fs.commands)


async def test_a_hangup_event_stops_the_session(freeswitch):
    pipeline = FakePipeline()
    server = await freeswitch(pipeline)
    fs = await FakeFreeSwitch().call(server.port)
    try:
        await asyncio.wait_for(fs.ws_ready.wait(), 10)
        await pipeline.created.wait()
        fs.event({"Event-Name": "CHANNEL_HANGUP", "Hangup-Cause": "NORMAL_CLEARING"})
        session = pipeline.sessions[0]
        await asyncio.wait_for(session.stopped_event.wait(), 5)
        assert session.stopped == "hangup"
        assert not any("call-command: hangup" in c for c in fs.commands)
    finally:
        await fs.close()


async def test_without_mod_audio_stream_the_call_is_hung_up_with_a_clear_log(freeswitch, caplog):
    pipeline = FakePipeline()
    server = await freeswitch(pipeline)
    fs = await FakeFreeSwitch(api={"uuid_audio_stream": "-ERR uuid_audio_stream Command not found!\n"}).call(server.port)
    try:
        await until(lambda: any("hangup-cause: SERVICE_UNAVAILABLE" in c for c in fs.commands))
    finally:
        await fs.close()
    assert "is mod_audio_stream loaded" in caplog.text and UUID in caplog.text
    assert not pipeline.sessions


async def test_bad_peers_end_alone_while_a_good_call_runs(freeswitch, caplog):
    caplog.set_level(logging.INFO, "gateway.telephony.freeswitch_server")
    pipeline = FakePipeline()
    server = await freeswitch(pipeline, command_timeout_seconds=1.0, read_timeout_seconds=1.0)
    good = await FakeFreeSwitch(uuid="good-call").call(server.port)
    await asyncio.wait_for(good.ws_ready.wait(), 10)
    await pipeline.created.wait()
    good_session = pipeline.by_call("good-call")

    async def talk() -> None:
        for f in frames(10_000):
            await good.ws.send_bytes(f)
            await asyncio.sleep(0.02)

    talker = asyncio.create_task(talk())

    async def raw_peer(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(data)
        got = b""
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), 10):
                got += chunk
        except ConnectionError:
            pass
        writer.close()
        return got

    quiet = FakeFreeSwitch(uuid="quiet-audio")
    try:
        results = await asyncio.gather(
            raw_peer(b"Content-Type: command/reply\nthis is not a header\n\n"),  # garbage for connect
            raw_peer(b"Content-Type: command/reply\n" + b"X" * 70_000),           # endless header block
            raw_peer(b""),                                                          # never answers connect
            quiet.call(server.port),                                                # audio that stops coming
        )
        assert all(r.startswith(b"connect\n\n") for r in results[:3])
        await asyncio.wait_for(quiet.ws_ready.wait(), 10)
        await until(lambda: any("call-command: hangup" in c for c in quiet.commands), 10)
        before = len(good_session.audio)
        await asyncio.sleep(0.3)
        assert good_session.stopped is None and len(good_session.audio) > before
        assert server.calls.get("good-call") is not None
    finally:
        talker.cancel()
        await asyncio.gather(talker, return_exceptions=True)
        await quiet.close()
        await good.close()
    text = caplog.text
    assert "protocol error" in text and "header block longer" in text and "no reply within" in text
    assert "quiet-audio: no audio for" in text


async def test_an_audio_stream_for_an_unknown_call_is_refused(freeswitch):
    server = await freeswitch(FakePipeline())
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(f"ws://127.0.0.1:{server.audio_port}/media/freeswitch/nobody")
    assert err.value.status == 404


# --- one whole call through the real core and the real voice pipeline ---------------------------
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_freeswitch_call_through_the_real_gateway_asks_for_an_agent_and_is_transferred(tmp_path):
    from gateway.app import build_core
    from gateway.telephony.freeswitch_server import start_freeswitch_channel
    from gateway.voice.pipeline import VoicePipeline
    from tests.voice.speech_corpus import utterance

    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "voice": {"asr": {"workers": 1}},
        "freeswitch": {"enabled": True, "port": 0, "audio_port": 0}})
    core = await build_core(settings)
    pipeline = VoicePipeline(settings, core)
    await pipeline.start()
    server = await start_freeswitch_channel(settings, core, pipeline)
    fs = FakeFreeSwitch(uuid="c0ffee00-0000-4000-8000-000000000001")
    loop = asyncio.get_running_loop()
    outgoing = bytearray()
    try:
        await fs.call(server.port)
        await asyncio.wait_for(fs.ws_ready.wait(), 30)

        async def send() -> None:  # mod_audio_stream: 20 ms of L16 every 20 ms
            t0, n = loop.time(), 0
            while not fs.ws.closed:
                frame = bytes(outgoing[:320]).ljust(320, b"\x00")
                del outgoing[:320]
                n += 1
                try:
                    await fs.ws.send_bytes(frame)
                except ConnectionError:
                    return
                await asyncio.sleep(max(0.0, t0 + n * 0.02 - loop.time()))

        sender = asyncio.create_task(send())

        def bot_talking_recently() -> bool:
            return bool(fs.received) and loop.time() - fs.received[-1][0] < 0.5

        await until(bot_talking_recently, 60)
        await until(lambda: not bot_talking_recently(), 60)
        outgoing += utterance("I would like to speak to an agent", rate=8000).pcm
        await until(lambda: any(c.startswith("api uuid_transfer ") for c in fs.commands), 120)
        await until(lambda: fs.uuid not in server.calls, 30)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    finally:
        await fs.close()
        await server.close()
        await pipeline.close()
        await core.store.close()
    conv = next(c.split()[-1] for c in fs.commands if c.startswith(f"api uuid_setvar {fs.uuid} voicegw_conversation_id "))
    transfer = next(c for c in fs.commands if c.startswith("api uuid_transfer "))
    assert transfer == f"api uuid_transfer {fs.uuid} support XML voicegw-agents"
    assert f"api uuid_setvar_multi {fs.uuid} voicegw_transfer_queue=support;voicegw_conversation_id={conv}" in fs.commands
    assert not any("call-command: hangup" in c for c in fs.commands)  # transferred, not dropped
    # the reply came back as 20 ms L16 frames, paced
    assert fs.received and all(len(f) == 320 for _, f in fs.received)
    span = fs.received[-1][0] - fs.received[0][0]
    assert len(fs.received) <= span / 0.02 * 1.25 + 10, (len(fs.received), span)
