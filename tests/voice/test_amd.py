"""Answering-machine detection on answered calls as they sound on a phone line (synthesized
speech, telephone band, G.711, line noise; tests/voice/amd_corpus.py) through the real Silero VAD."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from gateway.voice import audio
from gateway.voice.amd import AmdConfig, AnsweringMachineDetector, Verdict, detect
from gateway.voice.vad import SileroVad
from tests.voice.amd_corpus import MACHINE_GREETINGS, corpus, human, machine

MAX_VERDICT_SECONDS = 3.0


def _silero(rate: int):
    vad = SileroVad(rate)
    return lambda frame: vad.is_speech(frame) >= 0.5


@pytest.mark.parametrize("rate", [8000, 16000])
def test_people_and_machines_are_told_apart_within_three_seconds(rate):
    for clip in corpus(rate=rate, size="small"):
        found = detect(clip.pcm, rate, _silero(rate))
        assert found.verdict.verdict.value == clip.truth, (clip.name, found)
        assert found.verdict.at_seconds <= MAX_VERDICT_SECONDS, (clip.name, found)
        if clip.beep_end_s is not None:  # the message starts after the tone, not over it
            assert found.beep_ended_at is not None and abs(found.beep_ended_at - clip.beep_end_s) <= 0.1, \
                (clip.name, found.beep_ended_at, clip.beep_end_s)
        else:
            assert found.beep_ended_at is None, clip.name


def test_a_short_greeting_then_the_beep_is_a_machine_at_the_beep():
    clip = machine("Leave a message.", beep=(440, 1.0))
    found = detect(clip.pcm, clip.rate, _silero(clip.rate))
    assert found.verdict.verdict is Verdict.MACHINE and found.verdict.reason == "beep"
    assert found.verdict.at_seconds < clip.beep_end_s  # while the tone sounds


def test_line_noise_alone_is_unknown_and_acts_as_a_person_by_default():
    rng = np.random.default_rng(1)
    hiss = audio.float_to_pcm((rng.standard_normal(8000 * 4) * 0.003).astype(np.float32))
    found = detect(hiss, 8000, _silero(8000))
    assert found.verdict.verdict is Verdict.UNKNOWN and found.verdict.at_seconds == pytest.approx(2.5, abs=0.05)
    assert not found.verdict.is_machine() and found.verdict.is_machine(bias=1.0)


def test_bias_moves_the_greeting_limit():
    clip = human("hello, Alice Martin speaking", voice="heart", lead_s=0.1)
    neutral = detect(clip.pcm, clip.rate, _silero(clip.rate)).verdict
    leaning_human = detect(clip.pcm, clip.rate, _silero(clip.rate), AmdConfig(bias=-1.0)).verdict
    assert neutral.verdict is Verdict.MACHINE  # a long greeting without a pause reads as a recording...
    assert leaning_human.verdict is Verdict.HUMAN  # ...unless the site prefers never to misjudge people


def test_a_frame_of_the_wrong_size_is_a_clear_error():
    detector = AnsweringMachineDetector(8000)
    with pytest.raises(ValueError, match="expected 320"):
        detector.feed(bytes(100), False)


def test_voicegw_amd_prints_verdicts_for_recorded_greetings(tmp_path):
    person = human("hello?")
    voicemail = machine(MACHINE_GREETINGS[1], beep=(1000, 0.5))
    audio.write_wav(tmp_path / "person.wav", person.pcm, person.rate)
    audio.write_wav(tmp_path / "voicemail.wav", voicemail.pcm, voicemail.rate)
    (tmp_path / "broken.wav").write_bytes(b"RIFF nonsense")
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "amd", str(tmp_path / "person.wav"),
                             str(tmp_path / "voicemail.wav"), str(tmp_path / "broken.wav")],
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, VOICEGW_DATA_DIR=str(tmp_path)))
    assert result.returncode == 1  # one file could not be read; the others were still judged
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'person.wav'}: human after")
    assert lines[1].startswith(f"{tmp_path / 'voicemail.wav'}: machine after") and "beep ended at" in lines[1]
    assert "broken.wav: cannot read" in result.stderr
