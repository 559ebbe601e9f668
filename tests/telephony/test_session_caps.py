"""Each voice server holds at most ``max_sessions`` calls, and the node at most ``voice.max_calls``
over all of them, over real sockets around the real core and a real voice pipeline (pocketsphinx,
WebRTC VAD and espeak: cheap to start): fill the cap, the next call is refused cleanly the way its
PBX understands, one call ends, a new one is served."""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import build_core
from gateway.config import load_settings
from gateway.telephony import audiosocket as asock
from gateway.telephony.ari import AriApp
from gateway.telephony.asterisk import start_asterisk_channels
from gateway.telephony.freeswitch_server import FreeSwitchServer
from gateway.voice.cores import usable_cores
from gateway.voice.pipeline import CALLS_PER_CORE, VoicePipeline, node_call_limit
from gateway.voice.port import CallsFull
from gateway.links import LinkSigner
from gateway.metrics import Metrics
from gateway.telephony.twilio_media_server import TwilioMediaServer
from tests.telephony.helpers import until
from tests.telephony.test_agi_routes import AsteriskPeer
from tests.telephony.test_ari import recorded_bodies
from tests.telephony.test_freeswitch import FakeFreeSwitch
from tests.telephony.test_twilio_media import connected as twilio_connected, start as twilio_start

HOST = "127.0.0.1"
LIGHT_VOICE = {"vad": {"engine": "webrtc"}, "tts": {"engine": "espeak"},
               "asr": {"open_engine": "pocketsphinx", "closed_engine": "pocketsphinx", "cross_check": False}}
SILENCE = bytes(320)


@pytest.fixture
async def voice(tmp_path):
    """``make(**sections)``: settings, the real core and a started voice pipeline."""
    made: list[Any] = []

    async def make(**sections: Any):
        settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path), "voice": LIGHT_VOICE,
                                                        **sections})
        core = await build_core(settings)
        pipeline = VoicePipeline(settings, core)
        await pipeline.start()
        made.append((core, pipeline))
        return settings, core, pipeline

    yield make
    for core, pipeline in made:
        await pipeline.close()
        await core.store.close()


class Caller:
    """Asterisk's AudioSocket() side: the UUID, then 20 ms of silence every 20 ms; what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call_id: str):
        self.reader, self.writer, self.call_id = reader, writer, call_id
        self.kinds: list[int] = []
        self.closed = asyncio.Event()
        self.tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._receive())]

    @classmethod
    async def dial(cls, port: int) -> "Caller":
        reader, writer = await asyncio.open_connection(HOST, port)
        call_id = str(uuid.uuid4())
        writer.write(asock.encode_uuid(call_id) + asock.encode_audio(SILENCE))
        return cls(reader, writer, call_id)

    async def _send(self) -> None:
        while not self.closed.is_set():
            await asyncio.sleep(0.02)
            try:
                self.writer.write(asock.encode_audio(SILENCE))
            except (ConnectionError, RuntimeError):
                return

    async def _receive(self) -> None:
        try:
            while True:
                kind, length = struct.unpack(">BH", await self.reader.readexactly(3))
                if length:
                    await self.reader.readexactly(length)
                self.kinds.append(kind)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()

    async def hang_up(self) -> None:
        self.closed.set()
        self.writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_audiosocket_refuses_the_call_past_the_cap_with_a_hangup(voice, caplog):
    settings, core, pipeline = await voice(audiosocket={"port": 0, "max_sessions": 2},
                                           fastagi={"enabled": False})
    [server] = await start_asterisk_channels(settings, core, pipeline)
    metrics = Metrics()
    server.register_metrics(metrics)
    callers: list[Caller] = []
    try:
        callers += [await Caller.dial(server.port), await Caller.dial(server.port)]
        await until(lambda: all(c.call_id in server.active and c.kinds.count(0x10) > 5 for c in callers), 30)
        refused = await Caller.dial(server.port)
        await asyncio.wait_for(refused.closed.wait(), 5)
        assert refused.kinds == [0x00]  # 00 00 00: AudioSocket() returns, the dialplan goes on
        assert refused.call_id not in pipeline.sessions
        assert f"AudioSocket call {refused.call_id} from" in caplog.text and "refused" in caplog.text
        assert metrics.value("voicegw_sessions_refused_total", server="audiosocket") == 1
        await refused.hang_up()
        assert not any(c.closed.is_set() for c in callers)  # the calls in progress go on
        await callers[0].hang_up()
        await until(lambda: server.cap.active == 1, 10)
        callers.append(await Caller.dial(server.port))
        await until(lambda: callers[-1].call_id in server.active and callers[-1].kinds.count(0x10) > 5, 30)
        assert server.cap.refused == 1
    finally:
        for caller in callers:
            await caller.hang_up()
        await server.close()


async def test_fastagi_tells_the_dialplan_busy_past_the_cap(voice, caplog):
    settings, core, pipeline = await voice(audiosocket={"port": 0},
                                           fastagi={"port": 0, "audiosocket_address": "127.0.0.1:0",
                                                    "max_sessions": 2})
    audiosocket, agi = await start_asterisk_channels(settings, core, pipeline)
    metrics = Metrics()
    agi.register_metrics(metrics)

    async def to_audiosocket(peer: AsteriskPeer) -> None:  # the voicebot route, up to its long EXEC
        await peer.expect("ANSWER", "200 result=0")
        await peer.expect("GET VARIABLE VOICEGW_CONVERSATION", "200 result=0")
        await peer.expect("GET VARIABLE VOICEGW_OUTBOUND", "200 result=0")
        await peer.expect("SET VARIABLE VOICEGW_CALL ")
        await peer.expect("EXEC AudioSocket ", reply=None)

    try:
        first = await AsteriskPeer.call(agi.port, "voicebot", channel="PJSIP/alice-00000001")
        second = await AsteriskPeer.call(agi.port, "voicebot", channel="PJSIP/bob-00000002")
        await to_audiosocket(first)
        await to_audiosocket(second)
        busy = await AsteriskPeer.call(agi.port, "voicebot", channel="PJSIP/carol-00000003")
        assert await busy.expect("SET VARIABLE VOICEGW_STATUS ") == "SET VARIABLE VOICEGW_STATUS busy"
        await busy.expect_end()  # closed at once: AGI() returns, the dialplan reads VOICEGW_STATUS
        assert "FastAGI PJSIP/carol-00000003 from" in caplog.text
        assert metrics.value("voicegw_sessions_refused_total", server="fastagi") == 1
        first.writer.write(b"200 result=0\n")  # the first call's AudioSocket() returns: it ends
        await first.expect("SET VARIABLE VOICEGW_STATUS completed")
        await first.expect_end()
        await until(lambda: agi.active == 1, 10)
        again = await AsteriskPeer.call(agi.port, "voicebot", channel="PJSIP/carol-00000004")
        await to_audiosocket(again)  # served
        assert agi.sessions_refused == 1 and agi.active == 2
        for peer in (second, again):
            peer.writer.close()
    finally:
        await agi.close()
        await audiosocket.close()


async def test_freeswitch_hangs_up_the_call_past_the_cap_as_temporary_failure(voice, caplog):
    settings, core, pipeline = await voice(freeswitch={"enabled": True, "port": 0, "audio_port": 0,
                                                       "max_sessions": 2})
    server = await FreeSwitchServer(settings, pipeline).start()
    metrics = Metrics()
    server.register_metrics(metrics)
    ids = [f"c0ffee00-0000-4000-8000-00000000000{i}" for i in range(4)]
    peers: list[FakeFreeSwitch] = []
    try:
        for call_id in ids[:2]:
            peers.append(await FakeFreeSwitch(uuid=call_id).call(server.port))
        for fs in peers:
            await asyncio.wait_for(fs.ws_ready.wait(), 30)
        refused = await FakeFreeSwitch(uuid=ids[2]).call(server.port)
        peers.append(refused)
        await asyncio.wait_for(refused.closed.wait(), 10)
        assert refused.commands == ["connect", "sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_TEMPORARY_FAILURE"]
        assert f"FreeSWITCH call {ids[2]} from" in caplog.text
        assert metrics.value("voicegw_sessions_refused_total", server="freeswitch") == 1
        assert not peers[0].closed.is_set() and not peers[1].closed.is_set()
        peers[0].event({"Event-Name": "CHANNEL_HANGUP", "Hangup-Cause": "NORMAL_CLEARING"})
        await until(lambda: server.cap.active == 1, 10)
        again = await FakeFreeSwitch(uuid=ids[3]).call(server.port)
        peers.append(again)
        await asyncio.wait_for(again.ws_ready.wait(), 30)  # served: its audio stream is open
        assert ids[3] in server.calls and server.cap.refused == 1
    finally:
        for fs in peers:
            await fs.close()
        await server.close()


@pytest.mark.parametrize("full", ["ari.max_sessions", "voice.max_calls"])
async def test_ari_sends_the_call_past_the_cap_back_to_the_dialplan(voice, caplog, full):
    """Past ARI's own cap, or past the node's with ARI's own cap roomy, the third call goes back to
    the dialplan busy without being answered; after one call ends the next is served."""
    bodies = recorded_bodies()
    requests: list[tuple[str, str, dict[str, str]]] = []
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def rest(request: web.Request) -> web.Response:
        requests.append((request.method, request.path, dict(request.query)))
        if request.path == "/ari/channels/externalMedia":
            body = json.loads(json.dumps(bodies["/ari/channels/externalMedia"]))
            body["channelvars"]["UNICASTRTP_LOCAL_PORT"] = "9"  # discard: the bot's RTP goes nowhere
            return web.json_response(body)
        if request.path == "/ari/bridges":
            return web.json_response(bodies["/ari/bridges"])
        return web.Response(status=204)

    async def stasis_events(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        while not sock.closed:
            try:
                event = await asyncio.wait_for(events.get(), 0.2)
            except asyncio.TimeoutError:
                continue
            await sock.send_str(json.dumps(event))
        return sock

    app = web.Application()
    app.router.add_get("/ari/events", stasis_events)
    app.router.add_route("*", "/ari/{tail:.*}", rest)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    own_cap = full == "ari.max_sessions"
    settings, core, pipeline = await voice(ari={"enabled": True, "url": f"http://{HOST}:{port}",
                                                "password": "arisecret", "max_sessions": 2 if own_cap else 50},
                                           voice={**LIGHT_VOICE, "max_calls": 50 if own_cap else 2})
    ari = await AriApp(settings, pipeline).start()
    metrics = Metrics()
    for part in (ari, pipeline):
        part.register_metrics(metrics)

    def stasis_start(cid: str) -> dict[str, Any]:
        return {"type": "StasisStart", "channel": {"id": cid, "name": f"PJSIP/{cid}",
                                                   "caller": {"number": "5550300"}, "dialplan": {"exten": "702"}}}

    def answered(cid: str) -> bool:
        return ("POST", f"/ari/channels/{cid}/answer", {}) in requests

    try:
        await asyncio.wait_for(ari.connected.wait(), 10)
        for cid in ("call-1", "call-2"):
            await events.put(stasis_start(cid))
        await until(lambda: all(c in ari.calls and ari.calls[c].ready for c in ("call-1", "call-2")), 30)
        await events.put(stasis_start("call-3"))
        await until(lambda: any(p == "/ari/channels/call-3/continue" for _, p, _ in requests), 10)
        assert ("POST", "/ari/channels/call-3/variable", {"variable": "VOICEGW_STATUS", "value": "busy"}) in requests
        assert not answered("call-3") and "call-3" not in ari.calls
        assert "ARI call call-3 refused" in caplog.text and f"2 calls in progress ({full})" in caplog.text
        assert metrics.value("voicegw_sessions_refused_total", server="ari" if own_cap else "voice") == 1
        assert metrics.value("voicegw_sessions_refused_total", server="voice" if own_cap else "ari") == 0
        await events.put({"type": "StasisEnd", "channel": {"id": "call-1"}})
        await until(lambda: ari.cap.active == 1 and pipeline.calls.active == 1, 10)
        await events.put(stasis_start("call-4"))
        await until(lambda: "call-4" in ari.calls and ari.calls["call-4"].ready, 30)
        assert answered("call-4") and ari.cap.refused + pipeline.calls.refused == 1
        assert pipeline.calls.active == 2
    finally:
        await ari.close()
        await runner.cleanup()


async def test_the_node_cap_is_shared_by_every_voice_server(voice, caplog):
    """``voice.max_calls`` is the node's: an AudioSocket call and a FreeSWITCH call fill a cap of two,
    so the next call on either server is refused its own server's way (each server's own cap has
    room), and a session asked for without a server's slot (SIP, Twilio) is refused too. When one
    call ends, a call on the other server is served."""
    settings, core, pipeline = await voice(voice={**LIGHT_VOICE, "max_calls": 2},
                                           audiosocket={"port": 0}, fastagi={"enabled": False},
                                           freeswitch={"enabled": True, "port": 0, "audio_port": 0})
    [audiosocket] = await start_asterisk_channels(settings, core, pipeline)
    freeswitch = await FreeSwitchServer(settings, pipeline).start()
    metrics = Metrics()
    for part in (pipeline, audiosocket, freeswitch):
        part.register_metrics(metrics)
    ids = [f"c0ffee00-0000-4000-8000-00000000010{i}" for i in range(3)]
    callers: list[Caller] = []
    peers: list[FakeFreeSwitch] = []
    try:
        callers.append(await Caller.dial(audiosocket.port))
        peers.append(await FakeFreeSwitch(uuid=ids[0]).call(freeswitch.port))
        await asyncio.wait_for(peers[0].ws_ready.wait(), 30)
        await until(lambda: callers[0].call_id in audiosocket.active and callers[0].kinds.count(0x10) > 5, 30)
        assert pipeline.calls.active == 2 and len(pipeline.sessions) == 2

        refused = await Caller.dial(audiosocket.port)
        await asyncio.wait_for(refused.closed.wait(), 5)
        assert refused.kinds == [0x00] and refused.call_id not in pipeline.sessions
        assert f"AudioSocket call {refused.call_id} from" in caplog.text
        assert "refused: 2 calls in progress (voice.max_calls)" in caplog.text
        await refused.hang_up()
        busy = await FakeFreeSwitch(uuid=ids[1]).call(freeswitch.port)
        peers.append(busy)
        await asyncio.wait_for(busy.closed.wait(), 10)
        assert busy.commands == ["connect", "sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_TEMPORARY_FAILURE"]
        with pytest.raises(CallsFull, match=r"voice\.max_calls"):
            pipeline.session(call_id="sip-or-twilio", sample_rate=8000)
        assert metrics.value("voicegw_sessions_refused_total", server="voice") == 3
        assert metrics.value("voicegw_sessions_refused_total", server="audiosocket") == 0
        assert metrics.value("voicegw_sessions_refused_total", server="freeswitch") == 0
        assert "voicegw_voice_calls 2.0" in metrics.render() and "voicegw_voice_calls_max 2.0" in metrics.render()
        assert not callers[0].closed.is_set() and not peers[0].closed.is_set()  # the calls in progress go on

        await callers[0].hang_up()
        await until(lambda: pipeline.calls.active == 1 and audiosocket.cap.active == 0, 10)
        again = await FakeFreeSwitch(uuid=ids[2]).call(freeswitch.port)
        peers.append(again)
        await asyncio.wait_for(again.ws_ready.wait(), 30)  # served: its audio stream is open
        assert ids[2] in freeswitch.calls and pipeline.calls.active == 2 and freeswitch.cap.active == 2
        peers[0].event({"Event-Name": "CHANNEL_HANGUP", "Hangup-Cause": "NORMAL_CLEARING"})
        await until(lambda: pipeline.calls.active == 1, 10)
        session = pipeline.session(call_id="sip-or-twilio", sample_rate=8000)  # a slot of its own now
        assert pipeline.calls.active == 2
        await session.stop("hangup")
        assert pipeline.calls.active == 1  # given back when the session ends
    finally:
        for caller in callers:
            await caller.hang_up()
        for fs in peers:
            await fs.close()
        await freeswitch.close()
        await audiosocket.close()


def test_the_node_cap_defaults_to_a_dozen_calls_per_core():
    assert node_call_limit(7) == 7
    assert node_call_limit(0) == CALLS_PER_CORE * usable_cores()  # a container's CPU quota: tests/voice/test_cores.py


async def test_a_twilio_stream_past_the_node_cap_is_closed_busy(voice, caplog, tmp_path):
    """Twilio media streams have no slot of their own: the session takes the node's, and a stream
    past ``voice.max_calls`` is closed with 1013 (try again later) while the first goes on."""
    settings, core, pipeline = await voice(voice={**LIGHT_VOICE, "max_calls": 1})
    signer = LinkSigner(b"k" * 32, ttl_seconds=60, used_db=tmp_path / "links.db")
    server = TwilioMediaServer(settings, pipeline, signer=signer)
    app = web.Application()
    server.add_routes(app)
    ts = TestServer(app, host=HOST)
    await ts.start_server()
    http = aiohttp.ClientSession()
    streams = []
    try:
        for call in ("CA" + "1" * 32, "CA" + "2" * 32):
            ws = await http.ws_connect(ts.make_url("/media/twilio"))
            await ws.send_str(twilio_connected())
            await ws.send_str(twilio_start(f"MZ{call[2:]}", call))
            streams.append(ws)
            if len(streams) == 1:
                await until(lambda: pipeline.calls.active == 1, 10)
        msg = await asyncio.wait_for(streams[1].receive(), 10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and streams[1].close_code == 1013
        assert "refused: 1 calls in progress (voice.max_calls)" in caplog.text
        assert not streams[0].closed and pipeline.calls.refused == 1 and len(pipeline.sessions) == 1
    finally:
        for ws in streams:
            await ws.close()
        await until(lambda: pipeline.calls.active == 0, 10)  # the first stream's slot is given back
        await http.close()
        await ts.close()
        signer.close()
