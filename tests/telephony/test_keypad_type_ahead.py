"""Keys pressed during a prompt on the AGI keypad route reach the conversation, in order.

Asterisk's answers are those recorded in ``captures/agi_f_type_ahead`` (a real Asterisk 22 with
keys pressed during STREAM FILE, GET DATA "" and WAIT FOR DIGIT)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.config import load_settings
from gateway.core.actions import Ask, Expect, Say, Transfer
from gateway.core.events import DtmfPressed, Silence
from gateway.telephony.asterisk import start_asterisk_channels
from tests.telephony import fixtures
from tests.telephony.fakes import FakePipeline, ScriptedCore
from tests.telephony.test_agi_routes import AsteriskPeer, ToneSynth

CAPTURE = "captures/agi_f_type_ahead"


def recorded(command: str) -> list[str]:
    return fixtures.replies(fixtures.load(CAPTURE), command)


def key_reply(key: str, endpos: int = 8960) -> str:
    """STREAM FILE stopped by ``key``, in the recorded form (``200 result=52 endpos=8960`` is "4")."""
    return f"200 result={ord(key)} endpos={endpos}"


def settings_for(tmp_path):
    return load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "audiosocket": {"port": 0},
        "fastagi": {"port": 0, "audiosocket_address": "127.0.0.1:0"}})


async def dtmf_call(servers, **env):
    peer = await AsteriskPeer.call(servers[1].port, "fallback", **env)
    await peer.expect("ANSWER", "200 result=0")
    await peer.expect("GET VARIABLE VOICEGW_CONVERSATION", "200 result=0")
    await peer.expect("SET VARIABLE VOICEGW_CONVERSATION ")
    return peer


def test_the_capture_shows_what_the_route_relies_on():
    streams = recorded("STREAM FILE")
    assert streams[0] == key_reply("4")  # a key stops a prompt with escape digits ...
    assert recorded('GET DATA ""')[0] == "200 result=23 (timeout)"  # ... and GET DATA "" collects the rest
    assert streams[1] == "200 result=0 endpos=45235"  # STREAM FILE "" dropped the "7" pressed during it
    assert streams[2:] == [key_reply("9"), "200 result=0 endpos=45235"]  # resumed at endpos=8960
    assert "200 result=53" in recorded("WAIT FOR DIGIT")


async def test_a_key_during_the_greeting_reaches_the_real_conversation(tmp_path):
    """The issue's case: 0 (an agent) pressed while the greeting plays was lost; now it transfers."""
    from gateway.app import build_core

    settings = settings_for(tmp_path)
    core = await build_core(settings)
    servers = await start_asterisk_channels(settings, core, FakePipeline(), synthesizer=ToneSynth())
    lines = []
    try:
        peer = await dtmf_call(servers, callerid="5550123")
        lines.append(await peer.expect("STREAM FILE ", key_reply("0")))  # "Hello, thanks for calling." + 0
        while True:
            line = (await asyncio.wait_for(peer.reader.readline(), 20)).decode().rstrip("\n")
            if not line:
                break
            lines.append(line)
            peer.writer.write(b"200 result=0 endpos=1600\n" if line.startswith("STREAM FILE ") else b"200 result=1\n")
        peer.writer.write(b"HANGUP\n")
        peer.writer.close()
    finally:
        for s in reversed(servers):
            await s.close()
        await core.store.close()
    assert not any(line.startswith("GET DATA") for line in lines)  # the question was not asked again
    assert "SET VARIABLE VOICEGW_TRANSFER 1" in lines and "SET VARIABLE VOICEGW_STATUS transfer" in lines


KEYPAD_JOURNEY = """\
journey: keypad
steps:
  - id: welcome
    say: Welcome.
  - id: notice
    say: Calls are recorded.
  - id: ask_order
    ask: Please key your order number.
    expect: digits
    digits: [3, 8]
    slot: order_id
  - id: check
    ask: Is that right? Press 1 for yes, 2 for no.
    expect: yesno
    slot: right
  - id: hand
    transfer: orders
"""


async def test_keys_typed_during_a_prompt_start_the_answer_and_get_data_collects_the_rest(tmp_path):
    from gateway.app import build_core

    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "keypad.yaml").write_text(KEYPAD_JOURNEY, encoding="utf-8")
    shipped = load_settings(environ={}).project_path("config/journeys")
    (journeys / "intents.yaml").write_text((shipped / "intents.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "audiosocket": {"port": 0},
        "fastagi": {"port": 0, "audiosocket_address": "127.0.0.1:0"},
        "journeys": {"directory": str(journeys), "default": "keypad"}})
    core = await build_core(settings)
    synth = ToneSynth()
    servers = await start_asterisk_channels(settings, core, FakePipeline(), synthesizer=synth)
    try:
        peer = await dtmf_call(servers)
        await peer.expect("STREAM FILE ", recorded("STREAM FILE")[0])  # "4" during "Welcome."
        rest = await peer.expect('GET DATA "" ', recorded('GET DATA ""')[0])  # "23", then the caller stops
        assert rest.split()[3:] == ["6000", "7"]  # no prompt, up to 8 digits in all
        await peer.expect("GET DATA ", "200 result=1")  # the next question, asked normally: 1 = yes
        conv = (await peer.expect("SET VARIABLE VOICEGW_CONVERSATION ")).split()[-1]
        await peer.expect("SET VARIABLE VOICEGW_QUEUE orders")
        for _ in range(3):
            await peer.expect("SET VARIABLE ")
        await peer.expect("SET VARIABLE VOICEGW_STATUS transfer")
        await peer.expect_end()
        record = await core.store.get(conv)
    finally:
        for s in reversed(servers):
            await s.close()
        await core.store.close()
    assert record.slots["order_id"] == "423" and record.slots["right"] == "yes"
    # the caller was already answering: "Calls are recorded." and the question were never made or played
    assert [t for t, _ in synth.texts] == ["Welcome.", "Is that right? Press 1 for yes, 2 for no."]


async def test_a_key_during_an_announcement_is_kept_and_the_announcement_resumes(tmp_path):
    core = ScriptedCore(greeting=[Say("Please listen carefully.", barge_in=False), Ask("Yes or no?", Expect("yesno"))],
                        script=[[Transfer(queue="support")]])
    servers = await start_asterisk_channels(settings_for(tmp_path), core, FakePipeline(), synthesizer=ToneSynth())
    try:
        peer = await dtmf_call(servers)
        first = await peer.expect("STREAM FILE ", recorded("STREAM FILE")[2])  # "9" at sample 8960
        resumed = await peer.expect("STREAM FILE ", recorded("STREAM FILE")[3])
        assert resumed == f"{first} 8960"  # same prompt, from where the key stopped it
        await peer.expect("SET VARIABLE VOICEGW_CONVERSATION ")  # no GET DATA: "9" answers the question
        for _ in range(4):
            await peer.expect("SET VARIABLE ")
        await peer.expect("SET VARIABLE VOICEGW_STATUS transfer")
        await peer.expect_end()
    finally:
        for s in reversed(servers):
            await s.close()
    assert [e for _, e in core.events][:1] == [DtmfPressed("9")]


@dataclass
class SlowCore(ScriptedCore):
    """A core that takes a while to answer (a slow CRM lookup)."""

    delay: float = 0.4

    async def handle(self, conversation_id, event, *, session_id=""):
        await asyncio.sleep(self.delay)
        return await super().handle(conversation_id, event, session_id=session_id)


async def test_keys_typed_while_the_gateway_works_are_kept(tmp_path):
    core = SlowCore(greeting=[Ask("Your PIN?", Expect("digits", max_digits=4))],
                    script=[[], [], [], [Ask("Anything else?", Expect("yesno"))], [Transfer(queue="support")]])
    servers = await start_asterisk_channels(settings_for(tmp_path), core, FakePipeline(), synthesizer=ToneSynth())
    waits = recorded("WAIT FOR DIGIT")
    try:
        peer = await dtmf_call(servers)
        await peer.expect("GET DATA ", "200 result=1234")
        # the core works on the PIN: the route listens meanwhile; the caller presses "5"
        await peer.expect("WAIT FOR DIGIT 100", waits[0])
        await peer.expect("WAIT FOR DIGIT 100", waits[2])  # "200 result=53"
        while True:
            line = (await asyncio.wait_for(peer.reader.readline(), 10)).decode()
            if not line.startswith("WAIT FOR DIGIT"):
                break
            peer.writer.write(b"200 result=0\n")
        assert not line.startswith("GET DATA")  # "5" answers "Anything else?"
        assert line.startswith("SET VARIABLE VOICEGW_CONVERSATION ")
        peer.writer.write(b"200 result=1\n")
        for _ in range(4):
            await peer.expect("SET VARIABLE ")
        await peer.expect("SET VARIABLE VOICEGW_STATUS transfer")
        await peer.expect_end()
    finally:
        for s in reversed(servers):
            await s.close()
    events = [e for _, e in core.events]
    assert events[:5] == [DtmfPressed("1"), DtmfPressed("2"), DtmfPressed("3"), DtmfPressed("4"), DtmfPressed("5")]


async def test_no_key_no_answer_is_silence(tmp_path):
    core = ScriptedCore(greeting=[Ask("Your PIN?", Expect("digits", max_digits=4))], script=[[Transfer("support")]])
    servers = await start_asterisk_channels(settings_for(tmp_path), core, FakePipeline(), synthesizer=ToneSynth())
    try:
        peer = await dtmf_call(servers)
        await peer.expect("GET DATA ", recorded('GET DATA ""')[1])  # "200 result= (timeout)"
        for _ in range(5):
            await peer.expect("SET VARIABLE ")
        await peer.expect("SET VARIABLE VOICEGW_STATUS transfer")
        await peer.expect_end()
    finally:
        for s in reversed(servers):
            await s.close()
    assert [e for _, e in core.events][0] == Silence(seconds=6.0)
