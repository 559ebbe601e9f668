"""Twilio Media Streams and FreeSWITCH, played from sessions WRITTEN FROM THEIR DOCUMENTS (not
recorded: see ``protocol_docs/README.md``) against the real gateway: the real conversation core on
SQLite, the real voice pipeline (VAD, synthesizer; Whisper for the spoken request), the
connectors on real sockets. What the documents say the gateway must send is checked in order.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import load_settings
from gateway.links import LinkSigner
from gateway.telephony.freeswitch_server import FreeSwitchServer
from gateway.telephony.twilio_media_server import TwilioMediaServer
from gateway.voice.audio import ulaw_encode
from gateway.voice.pipeline import VoicePipeline
from tests.telephony.fixtures import load_written
from tests.telephony.helpers import until
from tests.telephony.written_peers import WrittenFreeSwitch, check_expected, play_twilio

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def gateway(tmp_path):
    from gateway.app import build_core

    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "voice": {"asr": {"workers": 1}}, "outreach": {"enabled": False},
        "twilio_media": {"transfer_numbers": {"*": "+15550123"}},
        "freeswitch": {"enabled": True, "port": 0, "audio_port": 0}})
    core = await build_core(settings)
    pipeline = VoicePipeline(settings, core)
    await pipeline.start()
    yield settings, core, pipeline
    await pipeline.close()
    await core.store.close()


@pytest.fixture
async def twilio(gateway, tmp_path):
    settings, core, pipeline = gateway
    signer = LinkSigner(b"k" * 32, ttl_seconds=60, used_db=tmp_path / "links.db")
    server = TwilioMediaServer(settings, pipeline, signer=signer)
    app = web.Application()
    server.add_routes(app)
    ts = TestServer(app, host="127.0.0.1")
    await ts.start_server()
    http = aiohttp.ClientSession()
    yield server, str(ts.make_url("")).rstrip("/"), http, core
    await http.close()
    await ts.close()
    signer.close()


async def test_twilio_a_key_that_cuts_the_greeting_clears_what_twilio_buffers(twilio):
    server, base, http, core = twilio
    lines = load_written("twilio/tw_a_key_cuts_the_greeting")
    heard = await play_twilio(http, base, lines, ws_path="/media/twilio")
    check_expected(lines, heard, {"ws"})
    events = [e for e, _ in heard.items]
    assert events.count("clear") == 1 and server.streams == {}
    assert all(len(p["media"]["payload"]) == 216 for e, p in heard.items if e == "media")  # 160 mu-law bytes


@pytest.mark.slow
async def test_twilio_b_speech_over_the_greeting_clears_it_and_an_agent_is_dialed_after_the_mark(twilio):
    from tests.voice.speech_corpus import utterance

    server, base, http, core = twilio
    lines = load_written("twilio/tw_b_caller_talks_over_the_greeting_and_asks_for_an_agent")
    speech = utterance("I would like to speak to an agent", rate=8000, lead_s=0.0, trail_s=0.2).pcm
    heard = await play_twilio(http, base, lines, ws_path="/media/twilio", caller_ulaw=ulaw_encode(speech))
    found = check_expected(lines, heard, {"ws", "http"})
    mark = heard.items[found[2]][1]["mark"]["name"]
    assert mark and heard.count("clear") >= 1
    assert server.ended_calls == 1 and server.streams == {}


async def test_freeswitch_a_outbound_socket_call_as_the_documents_describe_it(gateway):
    settings, core, pipeline = gateway
    server = await FreeSwitchServer(settings, pipeline).start()
    lines = load_written("freeswitch/fs_a_outbound_socket_call_with_a_key")
    fs = await WrittenFreeSwitch(lines).call(server.port)
    try:
        await asyncio.wait_for(fs.audio_ready.wait(), 30)
        await until(lambda: not server.calls and not pipeline.sessions, 60)
    finally:
        await fs.close()
        await server.close()
    check_expected(lines, fs.heard, {"esl", "audio"})
    commands = [p for e, p in fs.heard.items if e == "esl"]
    assert not any("call-command: hangup" in c for c in commands)  # the caller hung up: nothing to hang up
    conversation = next(c.split()[-1] for c in commands if c.startswith("api uuid_setvar "))
    kinds = [e.kind for e in await core.store.events(conversation)]
    assert kinds[0] == "CallStarted" and kinds[-1] == "ChannelClosed"
