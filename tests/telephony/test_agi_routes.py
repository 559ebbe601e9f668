"""The voicebot and DTMF routes, with a scripted Asterisk peer over real sockets."""

from __future__ import annotations

import asyncio
import struct
import uuid

import pytest

from agi import protocol as p
from gateway.config import load_settings
from gateway.core.actions import Ask, Expect, Hangup, Say, Transfer
from gateway.core.events import ChannelClosed, DtmfPressed, Silence
from gateway.telephony import audiosocket as asock
from gateway.telephony.asterisk import start_asterisk_channels
from gateway.voice.audio import read_wav
from tests.telephony.fakes import FakePipeline, ScriptedCore

HOST = "127.0.0.1"


class AsteriskPeer:
    """Plays Asterisk's side of one FastAGI session: expects commands, answers them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def call(cls, port: int, script: str, **env: str) -> "AsteriskPeer":
        reader, writer = await asyncio.open_connection(HOST, port)
        variables = {"network": "yes", "network_script": script, "request": f"agi://{HOST}:{port}/{script}",
                     "channel": "PJSIP/alice-00000001", "language": "en", "type": "PJSIP",
                     "uniqueid": "1795613927.1", "version": "22.10.1", "callerid": "5551234",
                     "calleridname": "Alice", "dnid": "700", "context": "voicegw-inbound", "extension": "700",
                     "priority": "2", "enhanced": "0.0", "accountcode": "", "threadid": "1"}
        variables.update(env)
        writer.write(p.encode_environment(variables))
        return cls(reader, writer)

    async def expect(self, prefix: str, reply: str | None = "200 result=1", timeout: float = 10) -> str:
        line = (await asyncio.wait_for(self.reader.readline(), timeout)).decode()
        assert line.startswith(prefix), f"expected {prefix!r}, got {line!r}"
        if reply is not None:
            self.writer.write(reply.encode() + b"\n")
        return line.rstrip("\n")

    async def expect_end(self) -> None:
        assert await asyncio.wait_for(self.reader.read(), 10) == b""
        self.writer.write(b"HANGUP\n")
        self.writer.close()


@pytest.fixture
def settings(tmp_path):
    return load_settings(environ={}, overrides={
        "data_dir": str(tmp_path),
        "audiosocket": {"port": 0},
        "fastagi": {"port": 0, "audiosocket_address": "127.0.0.1:0"},
    })


class ToneSynth:
    """Stand-in Synthesizer: 0.2 s of a tone per prompt, records what it was asked."""

    def __init__(self):
        self.texts: list[tuple[str, int]] = []

    async def synthesize(self, text: str, sample_rate: int, prompt_id: str = "") -> bytes:
        self.texts.append((text, sample_rate))
        return struct.pack("<h", 3000) * (sample_rate // 5)


async def test_voicebot_hands_audio_to_audiosocket_and_transfer_to_the_dialplan(settings):
    pipeline = FakePipeline()
    core = ScriptedCore()
    servers = await start_asterisk_channels(settings, core, pipeline, synthesizer=ToneSynth())
    audiosocket, agi = servers
    try:
        peer = await AsteriskPeer.call(agi.port, "voicebot")
        await peer.expect("ANSWER", "200 result=0")
        await peer.expect("GET VARIABLE VOICEGW_CONVERSATION", "200 result=0")
        await peer.expect("GET VARIABLE VOICEGW_OUTBOUND", "200 result=0")
        call_uuid = (await peer.expect("SET VARIABLE VOICEGW_CALL ")).split()[-1]
        line = await peer.expect("EXEC AudioSocket ", reply=None)
        assert line == f"EXEC AudioSocket {call_uuid},127.0.0.1:{audiosocket.port}"
        # Asterisk's AudioSocket() connects with that UUID
        r, w = await asyncio.open_connection(HOST, audiosocket.port)
        w.write(asock.encode_uuid(call_uuid) + asock.encode_audio(bytes(320)))
        await asyncio.wait_for(pipeline.created.wait(), 5)
        session = pipeline.sessions[0]
        assert session.kwargs["caller_id"] == "5551234" and session.kwargs["dialed"] == "700"
        assert await session.request_transfer(session.conversation_id,
                                              Transfer(queue="billing", skills=("fr",), language="fr"))
        session.hang_up("transferred")  # the session ends after a successful transfer
        data = await asyncio.wait_for(r.read(), 5)
        assert data.endswith(b"\x00\x00\x00")  # 0x00: AudioSocket() returns normally
        w.close()
        peer.writer.write(b"200 result=0\n")
        conv = session.conversation_id
        assert await peer.expect("SET VARIABLE VOICEGW_CONVERSATION ") == f"SET VARIABLE VOICEGW_CONVERSATION {conv}"
        assert await peer.expect("SET VARIABLE VOICEGW_QUEUE ") == "SET VARIABLE VOICEGW_QUEUE billing"
        assert await peer.expect("SET VARIABLE VOICEGW_SKILLS ") == "SET VARIABLE VOICEGW_SKILLS fr"
        assert await peer.expect("SET VARIABLE VOICEGW_LANGUAGE ") == "SET VARIABLE VOICEGW_LANGUAGE fr"
        await peer.expect("SET VARIABLE VOICEGW_TRANSFER 1")
        await peer.expect("SET VARIABLE VOICEGW_STATUS transfer")
        await peer.expect_end()
        await asyncio.sleep(0.05)
        assert len(pipeline.sessions) == 1
    finally:
        for s in reversed(servers):
            await s.close()


async def test_voicebot_resumes_the_conversation_an_originate_carried(settings):
    pipeline = FakePipeline()
    servers = await start_asterisk_channels(settings, ScriptedCore(), pipeline, synthesizer=ToneSynth())
    audiosocket, agi = servers
    try:
        conv = str(uuid.uuid4())
        peer = await AsteriskPeer.call(agi.port, "voicebot")
        await peer.expect("ANSWER", "200 result=0")
        await peer.expect("GET VARIABLE VOICEGW_CONVERSATION", f"200 result=1 ({conv})")
        await peer.expect("GET VARIABLE VOICEGW_OUTBOUND", "200 result=1 (1)")
        assert await peer.expect("SET VARIABLE VOICEGW_CALL ") == f"SET VARIABLE VOICEGW_CALL {conv}"
        await peer.expect(f"EXEC AudioSocket {conv},", reply=None)
        r, w = await asyncio.open_connection(HOST, audiosocket.port)
        w.write(asock.encode_uuid(conv) + asock.encode_audio(bytes(320)))
        await asyncio.wait_for(pipeline.created.wait(), 5)
        assert pipeline.sessions[0].kwargs["conversation_id"] == conv
        assert pipeline.sessions[0].kwargs["outbound"] is True
        w.close()  # the caller hangs up: AudioSocket() returns -1, then HANGUP
        await asyncio.wait_for(pipeline.sessions[0].stopped_event.wait(), 5)
        peer.writer.write(b"200 result=-1\nHANGUP\n")
        await peer.expect("SET VARIABLE VOICEGW_CONVERSATION", "511 Command Not Permitted on a dead channel or intercept routine")
        await peer.expect_end()
    finally:
        for s in reversed(servers):
            await s.close()


async def test_voicebot_without_audiosocket_app_falls_back_to_dtmf(settings):
    core = ScriptedCore(greeting=[Say("Hello."), Hangup()])
    servers = await start_asterisk_channels(settings, core, FakePipeline(), synthesizer=ToneSynth())
    try:
        peer = await AsteriskPeer.call(servers[1].port, "voicebot")
        await peer.expect("ANSWER", "200 result=0")
        await peer.expect("GET VARIABLE VOICEGW_CONVERSATION", "200 result=0")
        await peer.expect("GET VARIABLE VOICEGW_OUTBOUND", "200 result=0")
        await peer.expect("SET VARIABLE VOICEGW_CALL ")
        await peer.expect("EXEC AudioSocket ", "200 result=-2")  # no app_audiosocket.so
        await peer.expect("GET VARIABLE VOICEGW_CONVERSATION", "200 result=0")
        await peer.expect("SET VARIABLE VOICEGW_CONVERSATION ")
        await peer.expect("STREAM FILE ", "200 result=0 endpos=1600")
        await peer.expect("HANGUP", "200 result=1")
        await peer.expect("SET VARIABLE VOICEGW_STATUS completed")
        await peer.expect_end()
    finally:
        for s in reversed(servers):
            await s.close()
    assert core.opened[0]["caller_id"] == "5551234"


async def test_dtmf_route_plays_synthesized_prompts_and_keys_answers(settings, tmp_path, caplog):
    core = ScriptedCore(
        greeting=[Say("Welcome to the gateway."), Ask("Please key your 4 digit PIN.", Expect("digits", max_digits=4))],
        script=[[], [], [], [Ask("Anything else? 1 for yes, 2 for no.", Expect("yesno"))],
                [Transfer(queue="support", language="en")]],
    )
    synth = ToneSynth()
    servers = await start_asterisk_channels(settings, core, FakePipeline(), synthesizer=synth)
    try:
        peer = await AsteriskPeer.call(servers[1].port, "fallback", callerid="5550001")
        await peer.expect("ANSWER", "200 result=0")
        await peer.expect("GET VARIABLE VOICEGW_CONVERSATION", "200 result=0")
        await peer.expect("SET VARIABLE VOICEGW_CONVERSATION ")
        say = await peer.expect("STREAM FILE ", "200 result=-1 endpos=0")  # Asterisk cannot read it
        await peer.expect("CHANNEL STATUS", "200 result=6")  # the caller is still there: go on
        path = say.split()[2]
        assert say.endswith('"0123456789*#"')
        pcm, rate = read_wav(path + ".wav")
        assert rate == 8000 and len(pcm) == 3200
        ask = await peer.expect("GET DATA ", "200 result=1234")
        assert ask.split()[3:] == ["6000", "4"]
        ask2 = await peer.expect("GET DATA ", "200 result= (timeout)")
        assert ask2.split()[3:] == ["6000", "1"]
        await peer.expect("SET VARIABLE VOICEGW_CONVERSATION ")
        await peer.expect("SET VARIABLE VOICEGW_QUEUE support")
        await peer.expect("SET VARIABLE VOICEGW_SKILLS ")
        await peer.expect("SET VARIABLE VOICEGW_LANGUAGE en")
        await peer.expect("SET VARIABLE VOICEGW_TRANSFER 1")
        await peer.expect("SET VARIABLE VOICEGW_STATUS transfer")
        await peer.expect_end()
        await asyncio.sleep(0.05)
    finally:
        for s in reversed(servers):
            await s.close()
    assert "Asterisk could not play" in caplog.text
    events = [e for _, e in core.events]
    assert events[:4] == [DtmfPressed("1"), DtmfPressed("2"), DtmfPressed("3"), DtmfPressed("4")]
    assert events[4] == Silence(seconds=6.0)
    assert events[5] == ChannelClosed(reason="transfer")
    assert [t for t, _ in synth.texts] == ["Welcome to the gateway.", "Please key your 4 digit PIN.",
                                           "Anything else? 1 for yes, 2 for no."]
    assert core.opened[0]["caller_id"] == "5550001"


async def test_dtmf_route_runs_the_real_journeys(settings):
    """The keypad route through the real core: greeting, the open question, 0 for an agent."""
    from gateway.app import build_core

    core = await build_core(settings)
    synth = ToneSynth()
    servers = await start_asterisk_channels(settings, core, FakePipeline(), synthesizer=synth)
    lines: list[str] = []
    try:
        peer = await AsteriskPeer.call(servers[1].port, "fallback", callerid="5550123")
        await peer.expect("ANSWER", "200 result=0")
        await peer.expect("GET VARIABLE VOICEGW_CONVERSATION", "200 result=0")
        conv = (await peer.expect("SET VARIABLE VOICEGW_CONVERSATION ")).split()[-1]
        asked = 0
        while True:
            line = (await asyncio.wait_for(peer.reader.readline(), 20)).decode().rstrip("\n")
            if not line:
                break
            lines.append(line)
            if line.startswith("STREAM FILE "):
                peer.writer.write(b"200 result=0 endpos=1600\n")
            elif line.startswith("GET DATA "):
                asked += 1
                peer.writer.write(b"200 result=0\n")  # the caller keys 0: an agent, please
            else:
                peer.writer.write(b"200 result=1\n")
        peer.writer.write(b"HANGUP\n")
        peer.writer.close()
        record = await core.store.get(conv)
    finally:
        for s in reversed(servers):
            await s.close()
        await core.store.close()
    assert asked == 1
    assert "SET VARIABLE VOICEGW_TRANSFER 1" in lines and "SET VARIABLE VOICEGW_STATUS transfer" in lines
    assert any(line.startswith("SET VARIABLE VOICEGW_QUEUE ") for line in lines)
    spoken = " ".join(t for t, _ in synth.texts)
    assert "How can I help you today?" in spoken and "with an agent" in spoken
    assert record is not None and record.caller_id == "5550123"
