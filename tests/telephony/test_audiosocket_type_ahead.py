"""Keys pressed while the bot speaks on an AudioSocket call reach the conversation, in order.

Asterisk's side is the recorded AudioSocket session of a SIP caller pressing 1, 2 3, # * 0
(``audiosocket/as_c1_dtmf_sip_rfc4733_app``) replayed with its timing; the gateway side is
real: AudioSocket server, voice pipeline (light engines: pocketsphinx, WebRTC VAD, espeak), the
conversation core on a journey that greets at length and then asks for a number."""

from __future__ import annotations

import asyncio

import pytest

from gateway.app import build_core
from gateway.config import load_settings
from gateway.telephony.audiosocket_server import AudioSocketServer
from gateway.voice.pipeline import VoicePipeline
from tests.telephony import fixtures
from tests.telephony.helpers import until
from tests.telephony.test_session_caps import LIGHT_VOICE

pytestmark = pytest.mark.timeout(120)

JOURNEY = """\
journey: keys
steps:
  - id: welcome
    say: "Welcome to the order line. Calls may be recorded for quality and training. You can key your
      answers at any time, even while I am still talking."
  - id: ask_order
    ask: Please key your order number, then the hash key.
    expect: digits
    digits: [3, 8]
    slot: order_id
  - id: check
    ask: Is that right?
    expect: yesno
    slot: right
"""


async def _silence(writer: asyncio.StreamWriter) -> None:
    from gateway.telephony import audiosocket as asock

    while True:
        writer.write(asock.encode_audio(bytes(320)))
        await asyncio.sleep(0.02)


async def test_keys_during_the_greeting_fill_the_next_question(tmp_path):
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "keys.yaml").write_text(JOURNEY, encoding="utf-8")
    shipped = load_settings(environ={}).project_path("config/journeys")
    (journeys / "intents.yaml").write_text((shipped / "intents.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "voice": LIGHT_VOICE, "audiosocket": {"port": 0},
        "journeys": {"directory": str(journeys), "default": "keys"}})
    core = await build_core(settings)
    pipeline = VoicePipeline(settings, core)
    await pipeline.start()
    server = AudioSocketServer(settings, pipeline)
    await server.start()
    chunks = fixtures.load("audiosocket/as_c1_dtmf_sip_rfc4733_app")
    keys = [m["digit"] for m in fixtures.annotated_messages(chunks) if m["name"] == "dtmf"]
    assert keys == list("123#*0")
    try:
        reader, writer = await fixtures.replay_to_server("127.0.0.1", server.port, chunks, speed=1.0, close=False)
        await until(lambda: server.active or server.ended_calls, 10)
        call = next(iter(server.active.values()))
        await until(lambda: call.conversation_id != call.call_id or bool(pipeline.sessions), 10)
        session = pipeline.sessions[call.call_id]
        await until(lambda: bool(session.conversation_id), 10)
        conv = session.conversation_id
        # the call goes on after the recording ends: silence every 20 ms (the inter-digit timer
        # that sends "*0" runs on the caller's audio clock)
        silence = asyncio.create_task(_silence(writer))
        for _ in range(100):
            if len([e for e in await core.store.events(conv) if e.kind == "DtmfPressed"]) >= 6:
                break
            await asyncio.sleep(0.1)
        record = await core.store.get(conv)
        silence.cancel()
        writer.close()
    finally:
        await server.close()
        await pipeline.close()
    events = [e for e in await core.store.events(conv) if e.kind in ("DtmfPressed", "Say", "Ask")]
    await core.store.close()
    assert record is not None and record.slots.get("order_id") == "123"
    pressed = [e.payload.get("digit") for e in events if e.kind == "DtmfPressed"]
    assert pressed[:6] == list("123#*0")  # every key, in order
    # the first key came while the greeting was still being spoken: it cut it short and was kept
    first_key = next(i for i, e in enumerate(events) if e.kind == "DtmfPressed")
    assert [e.kind for e in events[:first_key]] == ["Say", "Ask"]
