"""Twilio Media Streams that cannot be forged or replayed, played from the outside.

Each test starts the real gateway (the real conversation core on SQLite or Redis, the real
voice pipeline, the web server on a real port) and plays Twilio over real sockets: the
incoming-call webhook signed with Twilio's own ``RequestValidator``, the WebSocket upgrade,
and the JSON messages of "Media Streams - WebSocket Messages". The attacker is the same client
without the auth token, or with parameters it copied, changed, kept too long or used twice.

Alice (customer C001, +15551234567, verified in a web chat first) is the customer an attacker
wants to be.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from gateway.app import build_core
from gateway.config import load_settings
from gateway.telephony.twilio_media_server import TWILIO_MEDIA, TwilioMediaServer, attach_pipeline
from gateway.voice.audio import ulaw_encode
from gateway.voice.pipeline import VoicePipeline
from gateway.web.app import WebRunner, start_web
from tests.digital.helpers import recv_until
from tests.redis_server import free_port, redis_server, redis_url  # noqa: F401  (pytest fixtures)
from tests.telephony.helpers import until
from tests.telephony.test_twilio_media import ACCOUNT, connected, media, start

pytestmark = pytest.mark.timeout(120)

TOKEN = "0123456789abcdef0123456789abcdef"
"""The Twilio account's auth token (what Twilio signs its requests with)."""
ALICE = "+15551234567"
STRANGER = "+15550100"
DIALED = "+15550199"
CALL = "CA" + "a" * 32
OTHER_CALL = "CA" + "b" * 32


@dataclass
class Gateway:
    """One running gateway node: core, voice pipeline, web server with the Twilio routes."""

    runner: WebRunner
    core: Any
    pipeline: VoicePipeline
    http: aiohttp.ClientSession
    settings: Any

    @property
    def url(self) -> str:
        return self.runner.url

    @property
    def twilio(self) -> TwilioMediaServer:
        return self.runner.app[TWILIO_MEDIA]

    def refused(self, reason: str) -> float:
        return self.runner.parts.metrics.value("voicegw_twilio_refused_total", reason=reason)


@dataclass
class Nodes:
    made: list[Gateway] = field(default_factory=list)
    closers: list[Callable[[], Any]] = field(default_factory=list)


@pytest.fixture
async def gateways(tmp_path):
    nodes = Nodes()

    async def make(name: str = "node", *, token: str = "", host: str = "127.0.0.1", port: int = 0,
                   public_url: str = "", clock: Callable[[], float] = time.time, core: Any = None,
                   pipeline: VoicePipeline | None = None, **sections: Any) -> Gateway:
        web = {"host": host, "port": port, **({"public_url": public_url} if public_url else {})}
        settings = load_settings(environ={}, overrides={
            "data_dir": str(tmp_path / name), "web": web, "twilio": {"auth_token": token},
            "outreach": {"enabled": False}, "voice": {"asr": {"workers": 1}}, **sections})
        own = core is None
        if own:
            core = await build_core(settings)
            pipeline = VoicePipeline(settings, core)
            await pipeline.start()
        runner = await start_web(settings, core, store=core.store, crm=core.crm, clock=clock)
        attach_pipeline(runner.app, pipeline)
        http = aiohttp.ClientSession()
        gw = Gateway(runner, core, pipeline, http, runner.parts.settings)  # public_url with the bound port
        nodes.made.append(gw)

        async def close() -> None:
            await http.close()
            await runner.close()
            if own:
                await pipeline.close()
                await core.store.close()
        nodes.closers.append(close)
        return gw

    yield make
    for close in reversed(nodes.closers):
        await close()


# --- Twilio's side ------------------------------------------------------------------------------
def signature(token: str, url: str, params: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


def webhook_form(call_sid: str, caller: str) -> dict[str, str]:
    """What Twilio POSTs to a number's Voice webhook for an incoming call."""
    return {"CallSid": call_sid, "AccountSid": ACCOUNT, "From": caller, "To": DIALED, "Caller": caller,
            "Called": DIALED, "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}


async def incoming_call(gw: Gateway, call_sid: str, caller: str, *, token: str = TOKEN) -> tuple[int, str]:
    """Twilio asks the gateway's voice webhook what to do with a call (signed with ``token``)."""
    form = webhook_form(call_sid, caller)
    url = gw.settings.web.public_url.rstrip("/") + "/twilio/voice"
    headers = signature(token, url, form) if token else {}
    async with gw.http.post(gw.url + "/twilio/voice", data=form, headers=headers) as resp:
        return resp.status, await resp.text()


def stream_of(twiml: str) -> tuple[str, dict[str, str]]:
    """The ``<Stream url>`` and its ``<Parameter>`` name/values, as Twilio reads the TwiML."""
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None, twiml
    return stream.attrib["url"], {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


async def open_stream(gw: Gateway, params: dict[str, str], *, call_sid: str = CALL, stream_sid: str = "MZ" + "1" * 32,
                      token: str = TOKEN) -> aiohttp.ClientWebSocketResponse:
    """Twilio connects the stream (upgrade signed over the stream URL) and sends connected + start."""
    ws_url = "ws" + gw.settings.web.public_url[4:].rstrip("/") + "/media/twilio"
    headers = signature(token, ws_url, {}) if token else {}
    ws = await gw.http.ws_connect(gw.url + "/media/twilio", headers=headers)
    await ws.send_str(connected())
    await ws.send_str(start(stream_sid, call_sid, params))
    return ws


async def refused_with_1008(ws: aiohttp.ClientWebSocketResponse) -> bool:
    msg = await asyncio.wait_for(ws.receive(), 10)
    return msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008


async def live_session(gw: Gateway, call_sid: str) -> Any:
    """The voice session of a stream, once it has started and its greeting has begun to play."""
    await until(lambda: call_sid in gw.twilio.streams and gw.twilio.streams[call_sid].ready, 30)
    session = gw.twilio.streams[call_sid].session
    await until(lambda: any(who == "bot" for who, _ in session.transcript), 30)
    return session


async def alice_verifies_in_chat(gw: Gateway) -> str:
    """Alice proves who she is in a web chat; her conversation id."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(gw.url + "/chat/ws") as ws:
            cid = (await recv_until(ws, "session", [], timeout=30))["conversation_id"]
            await recv_until(ws, "ask", [], timeout=30)
            for text in ("I want to dispute my bill", "12345678", "1985-03-14"):
                seen: list[dict[str, Any]] = []
                await ws.send_json({"type": "message", "text": text})
                await recv_until(ws, "ask", seen, timeout=30)
    assert "identity" in (await gw.core.context(cid))["verified"]
    return cid


# --- the attacks --------------------------------------------------------------------------------
async def test_unsigned_parameters_with_alices_number_never_open_her_conversation(gateways, caplog):
    caplog.set_level(logging.INFO, "gateway.telephony")
    gw = await gateways()  # loopback, no auth token: local development, unsigned streams allowed
    alice_cid = await alice_verifies_in_chat(gw)
    ws = await open_stream(gw, {"from": ALICE, "to": DIALED, "conversation_id": alice_cid, "outbound": "true"},
                           token="")
    session = await live_session(gw, CALL)
    said = " ".join(text for who, text in session.transcript if who == "bot")
    assert session.caller_id == "" and session.outbound is False
    assert session.conversation_id != alice_cid
    assert (await gw.core.context(session.conversation_id))["customer"]["id"] == ""
    assert "Alice" not in said and "verified" not in said
    assert "anonymous caller, parameters ignored" in caplog.text
    await ws.close()
    # nor through the voice webhook: without Twilio's signature the gateway signs no caller number
    status, twiml = await incoming_call(gw, OTHER_CALL, ALICE, token="")
    assert status == 200
    _, params = stream_of(twiml)
    assert params["from"] == "" and params["call_sid"] == OTHER_CALL
    ws = await open_stream(gw, params, call_sid=OTHER_CALL, stream_sid="MZ" + "2" * 32, token="")
    session = await live_session(gw, OTHER_CALL)
    assert session.caller_id == "" and session.conversation_id != alice_cid
    await ws.close()


async def test_with_a_token_unsigned_forged_altered_and_foreign_parameters_are_refused(gateways, caplog):
    caplog.set_level(logging.INFO, "gateway.telephony")
    gw = await gateways(token=TOKEN)
    # the upgrade signature covers a constant URL: an attacker may have it; the parameters decide
    ws = await open_stream(gw, {"from": ALICE, "to": DIALED})
    assert await refused_with_1008(ws)
    assert gw.refused("unsigned") == 1
    # a webhook that Twilio did not sign gets no TwiML at all
    status, _ = await incoming_call(gw, CALL, ALICE, token="not-the-token")
    assert status == 403 and gw.refused("bad-signature") == 1
    status, twiml = await incoming_call(gw, CALL, STRANGER)  # an honest call from a stranger
    assert status == 200
    _, honest = stream_of(twiml)
    assert honest["from"] == STRANGER and honest["call_sid"] == CALL and honest["voicegw_sig"]
    sig = honest["voicegw_sig"]
    attempts = {
        "altered": {**honest, "from": ALICE},
        "forged": {**honest, "voicegw_sig": sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")},
        "other-call": honest,  # right parameters, sent on another call's stream
    }
    for reason, params in attempts.items():
        call_sid = OTHER_CALL if reason == "other-call" else CALL
        ws = await open_stream(gw, params, call_sid=call_sid)
        assert await refused_with_1008(ws), reason
        assert gw.refused(reason) == 1, reason
    assert gw.twilio.ended_calls == 0  # no voice session was ever opened
    assert f"Twilio call {CALL} from 127.0.0.1: stream parameters refused (altered" in caplog.text
    # refusals did not use the honest parameters up: Twilio's own stream still works
    ws = await open_stream(gw, honest)
    session = await live_session(gw, CALL)
    assert session.caller_id == STRANGER
    await ws.close()


async def test_a_replayed_start_is_refused(gateways, caplog):
    gw = await gateways(token=TOKEN)
    _, twiml = await incoming_call(gw, CALL, ALICE)  # Alice really calls
    _, params = stream_of(twiml)
    ws = await open_stream(gw, params)
    session = await live_session(gw, CALL)
    assert session.caller_id == ALICE
    await ws.close()
    await until(lambda: CALL not in gw.twilio.streams)
    replay = await open_stream(gw, params)  # the same parameters, once more
    assert await refused_with_1008(replay)
    assert gw.refused("replayed") == 1 and gw.twilio.ended_calls == 1


async def test_a_replay_is_refused_on_every_node_sharing_redis(gateways, redis_url):  # noqa: F811
    shared = {"context": {"backend": "redis", "redis_url": redis_url}, "links": {"secret": "s" * 32}}
    node_a = await gateways("a", token=TOKEN, **shared)
    node_b = await gateways("b", token=TOKEN, core=node_a.core, pipeline=node_a.pipeline, **shared)
    _, twiml = await incoming_call(node_a, CALL, STRANGER)
    _, params = stream_of(twiml)
    ws = await open_stream(node_a, params)
    await live_session(node_a, CALL)
    replay = await open_stream(node_b, params, stream_sid="MZ" + "3" * 32)
    assert await refused_with_1008(replay)
    assert node_b.refused("replayed") == 1
    await ws.close()


async def test_expired_parameters_are_refused(gateways):
    now = [time.time()]
    gw = await gateways(token=TOKEN, clock=lambda: now[0])
    _, twiml = await incoming_call(gw, CALL, ALICE)
    _, params = stream_of(twiml)
    now[0] += gw.settings.twilio_media.parameters_ttl_seconds + 1
    ws = await open_stream(gw, params)
    assert await refused_with_1008(ws)
    assert gw.refused("expired") == 1 and gw.twilio.ended_calls == 0


@pytest.mark.parametrize("where", ["host", "public_url"])
async def test_beyond_loopback_without_a_token_every_twilio_route_refuses(gateways, caplog, where):
    caplog.set_level(logging.WARNING, "gateway.telephony")
    if where == "host":  # listening on every address
        gw = await gateways(host="0.0.0.0")
    else:  # on loopback behind a reverse proxy that Twilio (and anyone) reaches
        port = free_port()
        gw = await gateways(port=port, public_url="https://gw.example.com")
    base = gw.url.replace("0.0.0.0", "127.0.0.1")
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await gw.http.ws_connect(base + "/media/twilio")
    assert err.value.status == 403
    async with gw.http.post(base + "/twilio/voice", data=webhook_form(CALL, ALICE)) as resp:
        assert resp.status == 403 and "twilio.auth_token" in await resp.text()
    async with gw.http.post(base + "/media/twilio/after", data={"CallSid": CALL}) as resp:
        assert resp.status == 403
    assert gw.refused("no-auth-token") == 3
    assert "set twilio.auth_token (VOICEGW_TWILIO__AUTH_TOKEN)" in caplog.text


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("", False), ("::", False), ("10.0.0.5", False), ("gw.example.com", False),
    ("localhost.example.com", False),
])
def test_what_counts_as_loopback(host, loopback):
    from gateway.telephony.twilio_signing import is_loopback_host

    assert is_loopback_host(host) is loopback


def test_doctor_reports_a_twilio_route_beyond_loopback_without_a_token(tmp_path):
    from gateway.doctor import checks

    def twilio_check(**web: Any):
        settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path), "web": {"port": 0, **web}})
        return next(c for c in checks(settings) if c.name == "Twilio Media Streams signature")

    exposed = twilio_check(host="0.0.0.0")
    assert not exposed.ok and "twilio.auth_token" in exposed.fix and "web.host is 0.0.0.0" in exposed.detail
    assert not twilio_check(public_url="https://gw.example.com").ok
    assert twilio_check().ok


# --- the honest call ----------------------------------------------------------------------------
async def test_the_honest_signed_stream_is_served_with_its_caller(gateways):
    gw = await gateways(token=TOKEN)
    status, twiml = await incoming_call(gw, CALL, STRANGER)
    assert status == 200
    root = ET.fromstring(twiml)
    assert root.find("./Connect").attrib["action"] == gw.url + "/media/twilio/after"
    url, params = stream_of(twiml)
    assert url == "ws" + gw.url[4:] + "/media/twilio"
    assert set(params) == {"from", "to", "call_sid", "voicegw_sig"}
    assert sum(len(k) + len(v) for k, v in params.items()) < 400  # TwiML stays small
    ws = await open_stream(gw, params)
    session = await live_session(gw, CALL)
    assert (session.caller_id, session.dialed) == (STRANGER, DIALED)
    first = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)  # the greeting, as mu-law
    assert first["event"] == "media" and len(base64.b64decode(first["media"]["payload"])) == 160
    await ws.close()
    await asyncio.wait_for(session.ended.wait(), 10)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_an_honest_twilio_call_asks_for_an_agent_and_is_transferred(gateways):
    """The whole call as Twilio makes it: signed webhook, signed upgrade, signed parameters,
    the greeting out, the caller's speech in, the transfer dialed by ``<Connect action>``."""
    from tests.voice.speech_corpus import utterance

    gw = await gateways(token=TOKEN, twilio_media={"transfer_numbers": {"*": "+15550123"}})
    _, twiml = await incoming_call(gw, CALL, STRANGER)
    _, params = stream_of(twiml)
    loop = asyncio.get_running_loop()
    got: list[tuple[float, dict]] = []
    closed = asyncio.Event()
    outgoing = bytearray()
    ws = await open_stream(gw, params)
    stream_sid = "MZ" + "1" * 32

    async def receive() -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                got.append((loop.time(), json.loads(msg.data)))
                if got[-1][1]["event"] == "mark":  # Twilio echoes a mark once the audio before it played
                    await ws.send_str(json.dumps({"event": "mark", "sequenceNumber": "0", "streamSid": stream_sid,
                                                  "mark": got[-1][1]["mark"]}))
        closed.set()

    async def send() -> None:  # the caller's line: 20 ms of mu-law every 20 ms, silence between words
        t0, n = loop.time(), 0
        while not closed.is_set():
            pcm = bytes(outgoing[:320]).ljust(320, b"\x00")
            del outgoing[:320]
            n += 1
            try:
                await ws.send_str(media(ulaw_encode(pcm), n, stream=stream_sid))
            except ConnectionError:
                return
            await asyncio.sleep(max(0.0, t0 + n * 0.02 - loop.time()))

    tasks = [asyncio.create_task(receive()), asyncio.create_task(send())]
    try:
        def bot_talking_recently() -> bool:
            return bool(got) and loop.time() - got[-1][0] < 0.5

        await until(bot_talking_recently, 60)                # the greeting plays
        assert gw.twilio.streams[CALL].session.caller_id == STRANGER
        await until(lambda: not bot_talking_recently(), 60)  # and ends
        outgoing += utterance("I would like to speak to an agent", rate=8000).pcm
        await asyncio.wait_for(closed.wait(), 120)           # transferred: the gateway ends the stream
    finally:
        for t in tasks:
            t.cancel()
    form = {"CallSid": CALL, "AccountSid": ACCOUNT, "CallStatus": "in-progress"}
    after = gw.url + "/media/twilio/after"
    async with gw.http.post(after, data=form, headers=signature(TOKEN, after, form)) as resp:
        twiml = await resp.text()
    assert ws.close_code == 1000
    assert got[-1][1]["event"] == "mark"  # the stream ended after Twilio had played everything
    assert "<Dial><Number>+15550123</Number></Dial>" in twiml
    media_out = [(t, m) for t, m in got if m["event"] == "media"]
    assert media_out and all(len(base64.b64decode(m["media"]["payload"])) == 160 for _, m in media_out)
    span = media_out[-1][0] - media_out[0][0]  # paced: never faster than real time (with jitter)
    assert len(media_out) <= span / 0.02 * 1.25 + 10, (len(media_out), span)
