"""Twilio Media Streams: the codec on the documented message shapes, the server over real
WebSockets (aiohttp server + aiohttp client), bad streams ending alone. Signed parameters, the
attacks on them and one whole call through the real gateway: ``test_twilio_media_trust.py``.

The JSON below follows Twilio's "Media Streams - WebSocket Messages" documentation: string
``sequenceNumber``/``chunk``/``timestamp``, ``streamSid`` beside the event object, ``dtmf.track``
``inbound_track``, ``mediaFormat`` ``audio/x-mulaw`` 8000 Hz mono.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import load_settings
from gateway.links import LinkSigner
from gateway.telephony import twilio_media as tm
from gateway.telephony.twilio_signing import sign_stream_parameters
from gateway.telephony.twilio_media_server import TwilioMediaServer, TwilioMediaSettings
from gateway.voice.audio import ulaw_decode, ulaw_encode
from tests.telephony.fakes import FakePipeline
from tests.telephony.helpers import until

pytestmark = pytest.mark.timeout(60)

ACCOUNT = "AC" + "0" * 32
STREAM = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA" + "1" * 32


def connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(stream: str = STREAM, call: str = CALL, params: dict | None = None) -> str:
    return json.dumps({
        "event": "start", "sequenceNumber": "1",
        "start": {"accountSid": ACCOUNT, "streamSid": stream, "callSid": call, "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": params or {}},
        "streamSid": stream,
    })


def media(ulaw: bytes, chunk: int, stream: str = STREAM) -> str:
    return json.dumps({"event": "media", "sequenceNumber": str(chunk + 1),
                       "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(chunk * 20),
                                 "payload": base64.b64encode(ulaw).decode()},
                       "streamSid": stream})


def dtmf(digit: str, stream: str = STREAM) -> str:
    return json.dumps({"event": "dtmf", "streamSid": stream, "sequenceNumber": "5",
                       "dtmf": {"track": "inbound_track", "digit": digit}})


def stop(stream: str = STREAM) -> str:
    return json.dumps({"event": "stop", "sequenceNumber": "5",
                       "stop": {"accountSid": ACCOUNT, "callSid": CALL}, "streamSid": stream})


# --- codec ------------------------------------------------------------------------------------
def test_documented_messages_parse_to_typed_messages():
    p = tm.TwilioMediaParser()
    assert p.receive_text(connected()) == tm.Connected("Call", "1.0.0")
    s = p.receive_text(start(params={"from": "+15550100", "conversation_id": "c-1"}))
    assert isinstance(s, tm.Start) and s.stream_sid == STREAM and s.call_sid == CALL and s.account_sid == ACCOUNT
    assert s.custom_parameters == {"from": "+15550100", "conversation_id": "c-1"}
    assert (s.encoding, s.sample_rate, s.channels, s.tracks) == ("audio/x-mulaw", 8000, 1, ("inbound",))
    m = p.receive_text(media(b"\x7f\xff\x00" * 10, 3))
    assert m == tm.Media(STREAM, "inbound", 3, 60, b"\x7f\xff\x00" * 10)
    assert p.receive_text(dtmf("1")) == tm.Dtmf(STREAM, "1")
    mark = json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": STREAM, "mark": {"name": "greeting"}})
    assert p.receive_text(mark) == tm.Mark(STREAM, "greeting")
    assert p.receive_text(stop()) == tm.Stop(STREAM, CALL)


def test_gateway_messages_have_the_documented_shape():
    sent = json.loads(tm.encode_media(STREAM, b"\xff" * 160))
    assert sent == {"event": "media", "streamSid": STREAM, "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}}
    assert json.loads(tm.encode_mark(STREAM, "m1")) == {"event": "mark", "streamSid": STREAM, "mark": {"name": "m1"}}
    assert json.loads(tm.encode_clear(STREAM)) == {"event": "clear", "streamSid": STREAM}


@pytest.mark.parametrize("text, error", [
    ("{not json", "not JSON"),
    ("[1, 2]", "must be an object"),
    (json.dumps({"event": "hello"}), "unknown event"),
    (media(b"\x00", 1), "before start"),
    (start().replace("audio/x-mulaw", "audio/l16"), "unsupported media format"),
    (start().replace('"channels": 1', '"channels": 2'), "unsupported media format"),
    (json.dumps({"event": "start", "start": {"tracks": ["inbound"]}}), "without streamSid"),
])
def test_codec_rejects_what_is_not_a_media_streams_message(text, error):
    p = tm.TwilioMediaParser()
    with pytest.raises(tm.ProtocolError, match=error):
        p.receive_text(text)
    with pytest.raises(tm.ProtocolError, match="already failed"):
        p.receive_text(connected())


@pytest.mark.parametrize("text, error", [
    (media(b"", 1).replace('"payload": ""', '"payload": "%%%"'), "not base64"),
    (media(b"\x00", 1, stream="MZother"), "for stream"),
    (dtmf("x"), "not a key"),
    (start(), "second start"),
    ("x" * (tm.MAX_MESSAGE_BYTES + 1), "limit"),
])
def test_codec_rejects_bad_messages_within_a_stream(text, error):
    p = tm.TwilioMediaParser()
    p.receive_text(start())
    with pytest.raises(tm.ProtocolError, match=error):
        p.receive_text(text)


# --- server over real WebSockets ----------------------------------------------------------------
@pytest.fixture
async def twilio(tmp_path):
    servers = []

    async def make(pipeline, settings_overrides=None, **cfg):
        settings = load_settings(environ={}, overrides=settings_overrides or {})
        signer = LinkSigner(b"k" * 32, ttl_seconds=60, used_db=tmp_path / f"links-{len(servers)}.db")
        server = TwilioMediaServer(settings, pipeline, TwilioMediaSettings(**cfg), signer=signer)
        app = web.Application()
        server.add_routes(app)
        ts = TestServer(app, host="127.0.0.1")
        await ts.start_server()
        http = aiohttp.ClientSession()
        servers.append((ts, http, signer))
        return server, ts, http

    yield make
    for ts, http, signer in servers:
        await http.close()
        await ts.close()
        signer.close()


async def open_stream(ts, http, *, params=None, stream=STREAM, call=CALL):
    ws = await http.ws_connect(ts.make_url("/media/twilio"))
    await ws.send_str(connected())
    await ws.send_str(start(stream, call, params))
    return ws


async def test_a_stream_is_a_session_with_the_callers_audio_digits_and_parameters(twilio):
    pipeline = FakePipeline()
    server, ts, http = await twilio(pipeline)
    params = sign_stream_parameters(server.gate.signer, call_sid=CALL, caller="+15550100", dialed="+15550199",
                                    conversation_id="conv-7", ttl_seconds=60)
    ws = await open_stream(ts, http, params=params)
    await pipeline.created.wait()
    session = pipeline.sessions[0]
    assert session.call_id == CALL and session.sample_rate == 8000
    assert session.kwargs["caller_id"] == "+15550100" and session.kwargs["dialed"] == "+15550199"
    assert session.kwargs["conversation_id"] == "conv-7"
    ulaw = bytes(range(256)) * 5  # every mu-law code, in 160-byte chunks
    for i in range(0, len(ulaw), 160):
        await ws.send_str(media(ulaw[i:i + 160], i // 160 + 1))
    await ws.send_str(dtmf("4"))
    await ws.send_str(dtmf("#"))
    await until(lambda: len(session.audio) == 2 * len(ulaw) and len(session.dtmf) == 2)
    assert bytes(session.audio) == ulaw_decode(ulaw)
    assert session.dtmf == ["4", "#"]
    await ws.send_str(stop())
    await asyncio.wait_for(session.stopped_event.wait(), 5)
    assert session.stopped == "hangup"
    await ws.close()


async def test_bot_audio_goes_out_paced_as_160_byte_mulaw_frames(twilio):
    loop = asyncio.get_running_loop()
    tone = b"".join(int(8000 if (i // 10) % 2 else -8000).to_bytes(2, "little", signed=True) for i in range(8000))
    pipeline = FakePipeline(bot_audio=tone)  # 1 s
    server, ts, http = await twilio(pipeline)
    ws = await open_stream(ts, http)
    got: list[tuple[float, dict]] = []
    while len(got) < 50:
        msg = await asyncio.wait_for(ws.receive(), 5)
        got.append((loop.time(), json.loads(msg.data)))
    assert all(m["event"] == "media" and m["streamSid"] == STREAM for _, m in got)
    payloads = [base64.b64decode(m["media"]["payload"]) for _, m in got]
    assert all(len(p) == 160 for p in payloads)
    assert b"".join(payloads) == ulaw_encode(tone)
    span = got[-1][0] - got[0][0]
    assert span >= 49 * 0.02 * 0.8, span  # real time, not a burst
    # nothing but silence left: no more media messages
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(ws.receive(), 0.3)
    await ws.close()


async def test_barge_in_sends_clear_and_the_end_of_the_session_closes_the_stream(twilio):
    pipeline = FakePipeline(bot_audio=b"\x10\x00" * 16000)
    server, ts, http = await twilio(pipeline)
    ws = await open_stream(ts, http)
    await pipeline.created.wait()
    session = pipeline.sessions[0]
    first = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
    assert first["event"] == "media"
    session.cut("barge-in")
    session.bot_audio.clear()
    events = []
    while "clear" not in events:
        events.append(json.loads((await asyncio.wait_for(ws.receive(), 5)).data)["event"])
    assert events[-1] == "clear"
    session.hang_up()
    mark = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
    assert mark["event"] == "mark" and mark["streamSid"] == STREAM
    await asyncio.sleep(0.5)
    assert not ws.closed and session.stopped is None  # waits for Twilio to play out its buffer
    await ws.send_str(json.dumps({"event": "mark", "sequenceNumber": "9", "streamSid": STREAM,
                                  "mark": {"name": mark["mark"]["name"]}}))
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 1000
    await asyncio.wait_for(session.stopped_event.wait(), 5)


async def test_a_transfer_is_dialed_by_the_connect_action_after_the_stream(twilio):
    from gateway.core.actions import Transfer

    pipeline = FakePipeline()
    server, ts, http = await twilio(pipeline, transfer_numbers={"support": "+15550123"})
    ws = await open_stream(ts, http)
    await pipeline.created.wait()
    session = pipeline.sessions[0]
    assert await session.request_transfer("conv", Transfer(queue="support")) is True
    assert await session.request_transfer("conv", Transfer(queue="sales")) is False
    async with http.post(ts.make_url("/media/twilio/after"), data={"CallSid": CALL}) as resp:
        assert "<Dial><Number>+15550123</Number></Dial>" in await resp.text()
    async with http.post(ts.make_url("/media/twilio/after"), data={"CallSid": CALL}) as resp:
        assert "<Hangup/>" in await resp.text()
    await ws.close()


async def test_bad_streams_end_alone_while_a_good_call_runs(twilio, caplog):
    caplog.set_level(logging.INFO, "gateway.telephony.twilio_media_server")
    pipeline = FakePipeline()
    server, ts, http = await twilio(pipeline, read_timeout_seconds=1.0, start_timeout_seconds=1.0,
                                    max_message_bytes=8192)
    good = await open_stream(ts, http, call="CAgood")
    await pipeline.created.wait()
    good_session = pipeline.by_call("CAgood")
    sent = 0

    async def keep_talking() -> None:
        nonlocal sent
        while True:
            sent += 1
            await good.send_str(media(b"\x55" * 160, sent))
            await asyncio.sleep(0.02)

    talker = asyncio.create_task(keep_talking())
    closes = {}

    async def bad(name: str, *messages: str, connect_only: bool = False) -> None:
        ws = await http.ws_connect(ts.make_url("/media/twilio"))
        for m in messages:
            await ws.send_str(m)
        msg = await asyncio.wait_for(ws.receive(), 10)
        closes[name] = (msg.type, ws.close_code)
        await ws.close()

    await asyncio.gather(
        bad("oversize", connected(), start("MZbig", "CAbig"), "x" * 20000),
        bad("garbage", connected(), "{{{"),
        bad("unknown", connected(), start("MZunk", "CAunk"), json.dumps({"event": "dance", "streamSid": "MZunk"})),
        bad("silent-before-start", connected()),
        bad("stops-sending", connected(), start("MZquiet", "CAquiet")),
    )
    assert closes["oversize"][1] == 1009
    assert closes["garbage"][1] == 1008 and closes["unknown"][1] == 1008
    assert closes["silent-before-start"][1] == 1000 and closes["stops-sending"][1] == 1000
    await until(lambda: pipeline.by_call("CAquiet").stopped == "timeout")
    assert pipeline.by_call("CAunk").stopped == "protocol-error"
    # the good call was never touched and still receives every frame
    before = len(good_session.audio)
    await asyncio.sleep(0.3)
    assert good_session.stopped is None and len(good_session.audio) > before
    talker.cancel()
    await asyncio.gather(talker, return_exceptions=True)
    await good.close()
    text = caplog.text
    assert "CAunk" in text and "unknown event" in text and "CAquiet" in text and "nothing received" in text


async def test_with_an_auth_token_only_requests_signed_by_twilio_are_served(twilio):
    from twilio.request_validator import RequestValidator

    pipeline = FakePipeline()
    server, ts, http = await twilio(pipeline, settings_overrides={
        "twilio": {"auth_token": "secret-token"}, "web": {"public_url": "https://gw.example.com"}})
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(ts.make_url("/media/twilio"))
    assert err.value.status == 403
    forged = RequestValidator("other-token").compute_signature("wss://gw.example.com/media/twilio", {})
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(ts.make_url("/media/twilio"), headers={"X-Twilio-Signature": forged})
    assert err.value.status == 403
    good = RequestValidator("secret-token").compute_signature("wss://gw.example.com/media/twilio", {})
    ws = await http.ws_connect(ts.make_url("/media/twilio"), headers={"X-Twilio-Signature": good})
    await ws.send_str(connected())
    await ws.send_str(start(params=sign_stream_parameters(server.gate.signer, call_sid=CALL, caller="+15550100",
                                                          dialed="+15550199", ttl_seconds=60)))
    await asyncio.wait_for(pipeline.created.wait(), 5)
    assert pipeline.sessions[0].kwargs["caller_id"] == "+15550100"
    await ws.close()
    form = {"CallSid": CALL}
    async with http.post(ts.make_url("/media/twilio/after"), data=form) as resp:
        assert resp.status == 403
    sig = RequestValidator("secret-token").compute_signature("https://gw.example.com/media/twilio/after", form)
    async with http.post(ts.make_url("/media/twilio/after"), data=form, headers={"X-Twilio-Signature": sig}) as resp:
        assert resp.status == 200 and "<Hangup/>" in await resp.text()


async def test_streams_beyond_the_limit_are_refused_and_a_flood_is_cut_off(twilio):
    pipeline = FakePipeline()
    server, ts, http = await twilio(pipeline, max_streams=1)
    first = await open_stream(ts, http, call="CAfirst")
    await pipeline.created.wait()
    second = await open_stream(ts, http, stream="MZsecond", call="CAsecond")
    msg = await asyncio.wait_for(second.receive(), 5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and second.close_code == 1013
    assert len(pipeline.sessions) == 1
    # the first stream floods: 20 s of audio as fast as it can be sent
    for n in range(1000):
        if first.closed:
            break
        await first.send_str(media(b"\x55" * 160, n + 1))
    msg = await asyncio.wait_for(first.receive(), 5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    await asyncio.wait_for(pipeline.sessions[0].stopped_event.wait(), 5)
    assert pipeline.sessions[0].stopped == "flood"


async def test_without_a_pipeline_the_route_refuses(twilio):
    server, ts, http = await twilio(None)
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(ts.make_url("/media/twilio"))
    assert err.value.status == 503
