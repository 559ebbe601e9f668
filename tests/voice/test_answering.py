"""A call the gateway placed, answered by a person or by a voicemail box, through the real voice
pipeline (Silero VAD, recognizers, synthesizer) and the real core on SQLite: the journey waits
until it is known who answered; a person hears it at once, a machine gets the journey's message
after its beep, and the call ends. Audio is synthesized (tests/voice/amd_corpus.py)."""

from __future__ import annotations

import pytest

from gateway.app import build_core
from gateway.config import load_settings
from gateway.core.actions import Originate
from gateway.core.events import CallAccepted, CallStarted
from gateway.voice.pipeline import VoicePipeline
from gateway.voice.simulate import CallDriver, SimulatedControl
from tests.voice.amd_corpus import MACHINE_GREETINGS, human, machine

EMMA, EMMA_ID = "+15556667777", "C005"  # sample CRM: a device pickup reminder


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings(environ={}, overrides={"data_dir": str(tmp_path_factory.mktemp("answering")),
                                                "compliance": {"organisation": "Riverside Services"}})


async def _placed_call(settings):
    """Emma's reminder escalated to a call the gateway placed, as the telephony side answers it."""
    core = await build_core(settings)
    placed: list[Originate] = []

    async def telephony(cid, action):
        placed.append(action)

    core.register_sink(Originate, telephony)
    thread = await core.open("sms", customer_id=EMMA_ID, caller_id=EMMA, journey="appointment",
                             event=CallStarted(channel="sms", caller_id=EMMA, outbound=True))
    await core.handle(thread.conversation_id, CallAccepted(channel="outreach"))
    pipeline = VoicePipeline(settings, core)
    await pipeline.start()
    session = pipeline.session(call_id="out-1", sample_rate=8000, caller_id=EMMA, outbound=True,
                               conversation_id=thread.conversation_id, callback=placed[-1].callback,
                               control=SimulatedControl())
    await session.start()
    return core, pipeline, session, CallDriver(session)


def _said(session) -> list[str]:
    return [text for who, text in session.transcript if who == "bot"]


@pytest.mark.slow
async def test_a_person_hears_the_journey_once_they_have_said_hello(settings):
    core, pipeline, session, driver = await _placed_call(settings)
    try:
        clip = human("hello?", lead_s=0.4, wait_s=0.0)
        await driver.feed(clip.pcm[: int(0.9 * 8000) * 2])  # the answer and the first of the hello
        assert _said(session) == [] and not session.playback.talking  # nothing over the person's hello
        await driver.feed(clip.pcm[int(0.9 * 8000) * 2:] + bytes(2 * 8000))  # then they wait for us
        await driver.wait_for_bot(60)
        said = " ".join(_said(session))
        assert "automated call from Riverside Services" in said and "device pickup" in said
        events = await core.store.events(session.conversation_id)
        verdicts = [e.payload for e in events if e.kind == "AnsweringMachine"]
        assert [v["verdict"] for v in verdicts] == ["human"] and verdicts[0]["seconds"] <= 3.0
    finally:
        await session.stop()
        await pipeline.close()
        await core.close()


@pytest.mark.slow
async def test_a_voicemail_box_gets_the_message_after_its_beep_and_the_call_ends(settings):
    core, pipeline, session, driver = await _placed_call(settings)
    try:
        clip = machine(MACHINE_GREETINGS[1], beep=(1000, 0.5))
        await driver.feed(clip.pcm)
        for _ in range(50 * 60):
            if session.ended.is_set():
                break
            await driver.tick()
        said = _said(session)
        assert len(said) == 1 and "Hello Emma, this is Riverside Services" in said[0]
        assert "device pickup" not in said[0] and "Riverside store" not in said[0]
        assert session.ended.is_set()
        events = await core.store.events(session.conversation_id)
        verdicts = [e.payload for e in events if e.kind == "AnsweringMachine"]
        assert [(v["verdict"], v["beep"]) for v in verdicts] == [("machine", True)]
        # decided within 3 s of the answer; the message waits for the beep's end
        assert verdicts[0]["seconds"] <= 3.0 and verdicts[0]["message_at"] >= clip.beep_end_s - 0.1
        # the message starts after the beep ended, not over the greeting
        first_voice = next(i for i in range(0, len(driver.bot_audio), 320) if any(driver.bot_audio[i:i + 320]))
        assert first_voice / 320 * 0.02 >= clip.beep_end_s
    finally:
        await session.stop()
        await pipeline.close()
        await core.close()
