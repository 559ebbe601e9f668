"""Calls the gateway places over a real SIP leg, answered by baresip playing a person's hello or a
voicemail greeting with its beep: the real core, voice pipeline and SIP endpoint in a gateway
process; what baresip heard is read back by Whisper. Speech is synthesized
(tests/voice/amd_corpus.py), telephone band, G.711 and line noise."""

from __future__ import annotations

import json
import sqlite3

import pytest

from gateway.voice import audio
from tests.sip.baresip_peer import answer_with_baresip, finish_answering
from tests.sip.test_real_pipeline import transcribe
from tests.voice.amd_corpus import MACHINE_GREETINGS, human, machine

EMMA, EMMA_ID = "+15556667777", "C005"  # sample CRM: a device pickup at the Riverside store


def _verdicts(data_dir) -> list[dict]:
    with sqlite3.connect(data_dir / "conversations.db") as db:
        rows = db.execute("SELECT payload FROM events WHERE kind = 'AnsweringMachine'").fetchall()
    return [json.loads(r[0]) for r in rows]


def _first_voice_seconds(path) -> float:
    pcm, rate = audio.read_wav(path)
    frame = rate // 50 * 2
    for i in range(0, len(pcm) - frame + 1, frame):
        if audio.pcm_to_float(pcm[i:i + frame]).std() > 0.02:
            return i / 2 / rate
    return float("inf")


def _call(start_gateway, tmp_path, clip, seconds: float):
    wav = tmp_path / "answer.wav"
    audio.write_wav(wav, clip.pcm + bytes(2 * clip.rate * int(seconds)), clip.rate)
    port, handle = answer_with_baresip(EMMA, wav, tmp_path, seconds=seconds)
    gw = start_gateway(real=True, sip={"outbound_uri": f"sip:{{number}}@127.0.0.1:{port}"},
                       data_dir=str(tmp_path / "data"))
    gw.send(cmd="remind", customer_id=EMMA_ID, phone=EMMA)
    received, log = finish_answering(handle, timeout=seconds + 60)
    gw.send(cmd="quit")
    gw.expect("closed", timeout=60)
    return received, log, gw


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_voicemail_box_on_a_sip_leg_gets_the_message_after_the_beep(start_gateway, tmp_path) -> None:
    clip = machine(MACHINE_GREETINGS[0], beep=(1000, 0.5))
    received, log, gw = _call(start_gateway, tmp_path, clip, seconds=25)
    assert "Call established" in log or "established" in log, log[-2000:]
    assert [(v["verdict"], v["beep"]) for v in _verdicts(tmp_path / "data")] == [("machine", True)], gw.tail()
    assert _first_voice_seconds(received) >= clip.beep_end_s - 0.2  # nothing over the greeting
    text = transcribe(received)
    assert "emma" in text and "example services" in text, text  # compliance.organisation
    assert "device pickup" not in text, text  # the appointment itself stays off a voicemail


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_person_on_a_sip_leg_hears_the_journey_after_hello(start_gateway, tmp_path) -> None:
    clip = human("hello?", lead_s=0.5, wait_s=0.0)
    received, log, gw = _call(start_gateway, tmp_path, clip, seconds=20)
    assert [v["verdict"] for v in _verdicts(tmp_path / "data")] == ["human"], gw.tail()
    text = transcribe(received)
    assert "automated call" in text and "device pickup" in text, text
