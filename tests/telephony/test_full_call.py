"""A whole Asterisk call through the real gateway: AGI, AudioSocket in, journey, paced reply, AMI transfer.

Asterisk's side is played by the test: the FastAGI session of ``AGI(agi://.../voicebot)`` and
the ``AudioSocket()`` connection the route asks for. Speech is synthesized (tests/voice/speech_corpus.py), the conversation runs through the real
core (``build_core``) and the real voice pipeline (VAD, Whisper, hibari), and the transfer ends
in an AMI Redirect sent to a fake Asterisk that replays the recorded queue session, whose
AgentConnect event brings the screen-pop back to the conversation.
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from gateway.app import build_core
from gateway.config import load_settings
from gateway.telephony import audiosocket as asock
from gateway.telephony.asterisk import start_asterisk_channels
from gateway.telephony.calls import CallRegistry
from tests.telephony import fixtures
from tests.telephony.fake_ami import ReplayAmi
from tests.telephony.helpers import until
from tests.telephony.test_agi_routes import AsteriskPeer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PARK = "Local/park@fixtures-ami-00000017;2"
FRAME = 320


class Caller:
    """Asterisk's AudioSocket() side: sends caller frames every 20 ms, collects what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.frames: list[tuple[float, int, bytes]] = []
        self.closed = asyncio.Event()
        self.outgoing = bytearray()

    async def receive(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                head = await self.reader.readexactly(3)
                kind, length = struct.unpack(">BH", head)
                payload = await self.reader.readexactly(length) if length else b""
                self.frames.append((loop.time(), kind, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()

    async def send(self) -> None:
        loop = asyncio.get_running_loop()
        start, n = loop.time(), 0
        while not self.closed.is_set():
            frame = bytes(self.outgoing[:FRAME]).ljust(FRAME, b"\x00")
            del self.outgoing[:FRAME]
            try:
                self.writer.write(asock.encode_audio(frame))
            except ConnectionError:
                return
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))

    def bot_talking_recently(self, window: int = 25) -> bool:
        recent = [p for _, k, p in self.frames[-window:] if k == 0x10]
        return any(any(p) for p in recent)


async def test_caller_asks_for_an_agent_and_is_redirected_with_the_conversation_id(tmp_path):
    from tests.voice.speech_corpus import utterance
    from gateway.voice.pipeline import VoicePipeline

    fake_ami = ReplayAmi(fixtures.load("ami/ami_d_setvar_getvar_redirect_queue"))
    ami_port = await fake_ami.start()
    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp_path),
        "audiosocket": {"port": 0, "read_timeout_seconds": 10},
        "fastagi": {"port": 0, "audiosocket_address": "127.0.0.1:0"},
        "ami": {"enabled": True, "port": ami_port, "secret": "gatewaysecret", "agent_context": "voicegw-agents"},
        "voice": {"asr": {"workers": 1}},
    })
    core = await build_core(settings)
    pipeline = VoicePipeline(settings, core)
    await pipeline.start()
    calls = CallRegistry()
    servers = await start_asterisk_channels(settings, core, pipeline, calls=calls)
    ami, audiosocket, agi = servers
    try:
        await until(lambda: ami.connected, 10)
        # AGI(agi://gateway/voicebot) on the channel the recorded queue session knows
        peer = await AsteriskPeer.call(agi.port, "voicebot", channel=PARK, callerid="5550200")
        await peer.expect("ANSWER", "200 result=0")
        await peer.expect("GET VARIABLE VOICEGW_CONVERSATION", "200 result=0")
        await peer.expect("GET VARIABLE VOICEGW_OUTBOUND", "200 result=0")
        call_uuid = (await peer.expect("SET VARIABLE VOICEGW_CALL ")).split()[-1]
        await peer.expect(f"EXEC AudioSocket {call_uuid},127.0.0.1:{audiosocket.port}", reply=None)
        reader, writer = await asyncio.open_connection("127.0.0.1", audiosocket.port)
        writer.write(asock.encode_uuid(call_uuid))
        caller = Caller(reader, writer)
        tasks = [asyncio.create_task(caller.receive()), asyncio.create_task(caller.send())]
        # the greeting plays; when the bot falls silent, the caller speaks
        await until(lambda: caller.bot_talking_recently(), 60)
        await until(lambda: not caller.bot_talking_recently(), 60)
        speech = utterance("I would like to speak to an agent", rate=8000)
        caller.outgoing += speech.pcm
        await until(lambda: "Redirect" in fake_ami.names(), 120)
        await asyncio.wait_for(caller.closed.wait(), 30)
        for t in tasks:
            t.cancel()
        writer.close()
        # the Redirect took the channel out of AudioSocket() and AGI: EXEC ends, then HANGUP
        conv = calls.by_uuid(call_uuid).conversation_id
        assert conv
        # (recorded in captures/agi_g_voicebot_redirected_by_ami: the channel still takes variables)
        peer.writer.write(b"200 result=-1\nHANGUP\n")
        assert await peer.expect("SET VARIABLE VOICEGW_CONVERSATION ", "200 result=1") \
            == f"SET VARIABLE VOICEGW_CONVERSATION {conv}"
        await peer.expect("SET VARIABLE VOICEGW_STATUS transferred", "200 result=1")
        await peer.expect_end()
        # the screen-pop reached the conversation: the replayed AgentConnect named the agent
        agent = {}

        async def poll_agent() -> None:
            for _ in range(100):
                stored = await core.store.get(conv)
                if stored is not None and stored.state.agent:
                    agent["id"] = stored.state.agent
                    return
                await asyncio.sleep(0.05)

        await poll_agent()
    finally:
        for s in reversed(servers):
            await s.close()
        await pipeline.close()
        await fake_ami.close()
        await core.store.close()
    # transfer: the conversation id is set on the caller's channel, then the Redirect
    names = fake_ami.names()
    redirect_at = names.index("Redirect")
    setvars = {a["variable"][0]: a["value"][0] for a in fake_ami.received[:redirect_at] if a["action"] == ["Setvar"]}
    assert setvars["__VOICEGW_CONVERSATION"] == conv and setvars["VOICEGW_QUEUE"] == "support"
    assert setvars["VOICEGW_STATUS"] == "transferred"
    redirect = fake_ami.received[redirect_at]
    assert redirect["channel"] == [PARK] and redirect["context"] == ["voicegw-agents"]
    assert redirect["exten"] == ["support"] and redirect["priority"] == ["1"]
    # the reply audio came back as 8 kHz frames, paced: no burst of the whole prompt at once
    audio = [(t, p) for t, k, p in caller.frames if k == 0x10]
    assert all(len(p) == FRAME for _, p in audio)
    span = audio[-1][0] - audio[0][0]
    assert len(audio) <= span / 0.02 * 1.25 + 10, (len(audio), span)
    assert caller.frames[-1][1] == 0x00  # the gateway ended the AudioSocket leg with a hangup message
    assert agent.get("id") == "Local/agent@fixtures-agents/n"
