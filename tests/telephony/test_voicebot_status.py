"""``VOICEGW_STATUS`` tells the dialplan the truth: ``transferred`` after an AMI Redirect, ``busy``
at the AudioSocket cap, ``error`` when the gateway failed the call. Asterisk's answers are the
recorded ones (``captures/agi_g_voicebot_redirected_by_ami``: after the Redirect ``EXEC`` answers
``200 result=-1`` then ``HANGUP``, and the channel still takes variables)."""

from __future__ import annotations

import asyncio

from gateway.config import load_settings
from gateway.core.actions import Transfer
from gateway.telephony import audiosocket as asock
from gateway.telephony.asterisk import start_asterisk_channels
from gateway.telephony.calls import CallRegistry
from tests.telephony import fixtures
from tests.telephony.fake_ami import ReplayAmi
from tests.telephony.fakes import FakePipeline, FakeSession, ScriptedCore
from tests.telephony.helpers import until
from tests.telephony.test_agi_routes import AsteriskPeer

REDIRECTED = "captures/agi_g_voicebot_redirected_by_ami"
CHANNEL = "Local/redirect@harness-00000022;2"


def settings_for(tmp_path, **sections):
    return load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "audiosocket": {"port": 0},
        "fastagi": {"port": 0, "audiosocket_address": "127.0.0.1:0"}, **sections})


async def start_call(agi_port: int, audiosocket_port: int, pipeline: FakePipeline | None = None):
    """AGI(voicebot) up to EXEC AudioSocket, then AudioSocket() connecting with the route's UUID."""
    peer = await AsteriskPeer.call(agi_port, "voicebot", channel=CHANNEL)
    await peer.expect("ANSWER", "200 result=0")
    await peer.expect("GET VARIABLE VOICEGW_CONVERSATION", "200 result=0")
    await peer.expect("GET VARIABLE VOICEGW_OUTBOUND", "200 result=0")
    call_uuid = (await peer.expect("SET VARIABLE VOICEGW_CALL ")).split()[-1]
    await peer.expect("EXEC AudioSocket ", reply=None)
    reader, writer = await asyncio.open_connection("127.0.0.1", audiosocket_port)
    writer.write(asock.encode_uuid(call_uuid) + asock.encode_audio(bytes(320)))
    if pipeline is not None:
        await asyncio.wait_for(pipeline.created.wait(), 5)
    return peer, call_uuid, reader, writer


async def test_after_an_ami_redirect_the_route_says_transferred(tmp_path):
    recorded = fixtures.replies(fixtures.load(REDIRECTED), "EXEC AudioSocket")
    assert recorded == ["200 result=-1"]
    set_reply = fixtures.replies(fixtures.load(REDIRECTED), "SET VARIABLE")[-1]
    fake_ami = ReplayAmi(fixtures.load("captures/ami_f_transfer_by_redirect"))
    ami_port = await fake_ami.start()
    settings = settings_for(tmp_path, ami={"enabled": True, "port": ami_port, "secret": "gatewaysecret"})
    pipeline = FakePipeline()
    calls = CallRegistry()
    servers = await start_asterisk_channels(settings, ScriptedCore(), pipeline, calls=calls)
    ami, audiosocket, agi = servers
    try:
        await until(lambda: ami.connected, 10)
        peer, call_uuid, reader, writer = await start_call(agi.port, audiosocket.port, pipeline)
        session = pipeline.sessions[0]
        assert await session.request_transfer(session.conversation_id, Transfer(queue="orders", language="es"))
        session.hang_up("transferred")
        writer.close()  # Asterisk ends AudioSocket() when the channel is redirected ...
        peer.writer.write(f"{recorded[0]}\nHANGUP\n".encode())  # ... and answers EXEC like this
        conv = session.conversation_id
        assert await peer.expect("SET VARIABLE VOICEGW_CONVERSATION ", set_reply) == \
            f"SET VARIABLE VOICEGW_CONVERSATION {conv}"
        await peer.expect("SET VARIABLE VOICEGW_STATUS transferred", set_reply)
        await peer.expect_end()
    finally:
        for s in reversed(servers):
            await s.close()
        await fake_ami.close()
    setvars = {a["variable"][0]: a["value"][0] for a in fake_ami.received if a["action"] == ["Setvar"]}
    assert setvars["VOICEGW_STATUS"] == "transferred" and setvars["VOICEGW_QUEUE"] == "orders"
    assert fake_ami.names()[-2:] == ["Redirect", "Logoff"]


class FailingSession(FakeSession):
    async def start(self) -> None:
        raise RuntimeError("the core is unreachable")


class FailingPipeline(FakePipeline):
    def session(self, *, call_id: str, sample_rate: int = 8000, **kwargs):
        s = FailingSession(call_id, sample_rate, **kwargs)
        self.sessions.append(s)
        self.created.set()
        return s


async def test_a_call_the_gateway_failed_goes_back_to_the_dialplan_as_an_error(tmp_path):
    pipeline = FailingPipeline()
    servers = await start_asterisk_channels(settings_for(tmp_path), ScriptedCore(), pipeline)
    audiosocket, agi = servers
    try:
        peer, _call_uuid, reader, writer = await start_call(agi.port, audiosocket.port, pipeline)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the gateway closed AudioSocket()
        writer.close()
        peer.writer.write(b"200 result=0\n")  # AudioSocket() returns normally on a TCP close
        await peer.expect("SET VARIABLE VOICEGW_REASON gateway-error")
        await peer.expect("SET VARIABLE VOICEGW_STATUS error")  # not "completed": the dialplan finds a person
        await peer.expect_end()
    finally:
        for s in reversed(servers):
            await s.close()


async def test_a_call_past_the_audiosocket_cap_is_busy_not_completed(tmp_path):
    pipeline = FakePipeline()
    servers = await start_asterisk_channels(settings_for(tmp_path, audiosocket={"port": 0, "max_sessions": 1}),
                                            ScriptedCore(), pipeline)
    audiosocket, agi = servers
    try:
        first = await start_call(agi.port, audiosocket.port, pipeline)
        second_peer, _uuid, reader, writer = await start_call(agi.port, audiosocket.port)
        data = await asyncio.wait_for(reader.read(), 5)
        assert data == asock.encode_hangup()  # refused: AudioSocket() returns normally
        writer.close()
        second_peer.writer.write(b"200 result=0\n")
        await second_peer.expect("SET VARIABLE VOICEGW_REASON gateway-busy")
        await second_peer.expect("SET VARIABLE VOICEGW_STATUS busy")
        await second_peer.expect_end()
        first[3].close()
        first[0].writer.close()
    finally:
        for s in reversed(servers):
            await s.close()


async def test_a_caller_leg_that_sends_no_audio_goes_to_the_agents_not_to_a_hangup(tmp_path):
    """Asterisk forwards only the frames the caller's leg delivers (a phone with silence
    suppression sends none): the gateway's read timeout ends AudioSocket(), the caller is there."""
    pipeline = FakePipeline()
    settings = settings_for(tmp_path, audiosocket={"port": 0, "read_timeout_seconds": 0.3})
    servers = await start_asterisk_channels(settings, ScriptedCore(), pipeline)
    audiosocket, agi = servers
    try:
        peer, _call_uuid, reader, writer = await start_call(agi.port, audiosocket.port, pipeline)
        await asyncio.wait_for(reader.read(), 5)  # closed by the gateway after 0.3 s of nothing
        writer.close()
        peer.writer.write(b"200 result=0\n")
        await peer.expect("SET VARIABLE VOICEGW_REASON gateway-timeout")
        await peer.expect("SET VARIABLE VOICEGW_CONVERSATION ")
        await peer.expect("SET VARIABLE VOICEGW_STATUS error")
        await peer.expect_end()
    finally:
        for s in reversed(servers):
            await s.close()
