"""``voicegw say`` and ``voicegw transcribe`` run as a user would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from gateway.config import PACKAGE_ROOT
from gateway.voice import audio
from gateway.voice.asr.base import wer
from tests.voice.speech_corpus import utterance


def voicegw(*args: str, data_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VOICEGW_DATA_DIR=str(data_dir))
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=PACKAGE_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.slow
def test_say_then_transcribe_many_files_with_json(tmp_path: Path) -> None:
    said = tmp_path / "said.wav"
    run = voicegw("say", "I want to check the status of my order.", "-o", str(said), "--rate", "8000", data_dir=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "said.wav" in run.stdout
    pcm, rate = audio.read_wav(said)
    assert rate == 8000 and len(pcm) > 8000

    # a 44.1 kHz stereo float file: converted on the way in
    u = utterance("there is a wrong charge on my bill", rate=16000, telephone=False, ulaw=False)
    mono = audio.pcm_to_float(audio.resample(u.pcm, 16000, 44100))
    stereo = tmp_path / "stereo.wav"
    soundfile.write(str(stereo), np.stack([mono, mono], axis=1), 44100, subtype="FLOAT")
    garbage = tmp_path / "garbage.wav"
    garbage.write_text("not audio\n" * 50)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(said.read_bytes()[:3000])

    run = voicegw("transcribe", str(said), str(garbage), str(stereo), str(truncated), "--json", data_dir=tmp_path)
    assert run.returncode == 1, run.stderr
    results = json.loads(run.stdout)
    assert [r["file"] for r in results] == [str(said), str(garbage), str(stereo), str(truncated)]
    ok = {r["file"]: r for r in results if "text" in r}
    assert set(ok) == {str(said), str(stereo)}
    assert wer("I want to check the status of my order", ok[str(said)]["text"]) <= 0.25
    assert wer(u.text, ok[str(stereo)]["text"]) <= 0.25
    for r in ok.values():
        assert r["engine"] == "whisper"
        assert set(r) == {"file", "text", "confidence", "engine", "audio_seconds", "decode_seconds"}
        assert r["audio_seconds"] > 1.0 and r["decode_seconds"] > 0
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert any(str(garbage) in line and "not a readable audio file" in line for line in errors)
    assert any(str(truncated) in line and "truncated" in line for line in errors)


@pytest.mark.slow
def test_transcribe_digits_with_pocketsphinx(tmp_path: Path) -> None:
    u = utterance("four five six one two", rate=16000, telephone=False, ulaw=False)
    path = tmp_path / "digits.wav"
    audio.write_wav(path, u.pcm, 16000)
    run = voicegw("transcribe", str(path), "--engine", "pocketsphinx", "--expect", "digits", data_dir=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "four five six one two"


def test_transcribe_refuses_open_speech_on_pocketsphinx_and_missing_vosk(tmp_path: Path) -> None:
    wav = tmp_path / "x.wav"
    audio.write_wav(wav, b"\x00\x00" * 8000, 8000)
    run = voicegw("transcribe", str(wav), "--engine", "pocketsphinx", data_dir=tmp_path)
    assert run.returncode == 2 and "--expect digits" in run.stderr
    run = voicegw("transcribe", str(wav), "--engine", "vosk", "--expect", "yesno", data_dir=tmp_path)
    assert run.returncode == 1 and "vosk_model_dir" in run.stderr
