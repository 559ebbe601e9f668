"""A real SIP call through the real voice pipeline and the real conversation core.

The softphone (its own process) waits for the greeting to end, says "I want to check the status
of my order" and records the gateway's answer; Whisper then reads the recording back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.config import PACKAGE_ROOT
from gateway.voice.audio import read_wav, resample, write_wav
from tests.sip.conftest import run_softphone, softphone_results

pytestmark = [pytest.mark.sip, pytest.mark.slow, pytest.mark.timeout(300)]


def transcribe(path: Path) -> str:
    from faster_whisper import WhisperModel

    pcm, rate = read_wav(path)
    pcm16 = resample(pcm, rate, 16000)
    model = WhisperModel(str(PACKAGE_ROOT / "models" / "whisper-base"), device="cpu", compute_type="int8",
                         cpu_threads=1)
    segments, _ = model.transcribe(np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0,
                                   language="en", beam_size=1)
    return " ".join(s.text for s in segments).lower()


def test_call_through_real_pipeline_and_core(start_any_gateway, tmp_path) -> None:
    """Run with the SIP endpoint in the gateway process, and with SIP workers (the session runs
    in the gateway, the call in a worker)."""
    from tests.voice.speech_corpus import utterance

    gw = start_any_gateway(real=True)
    said = utterance("I want to check the status of my order", lead_s=0.3, trail_s=0.3)
    caller = tmp_path / "caller.wav"
    write_wav(caller, said.pcm, said.rate)
    reply = tmp_path / "reply.wav"
    done = run_softphone(f"sip:bot@127.0.0.1:{gw.port}", tmp_path, "--play", str(caller), "--quiet", "1.5",
                         "--pause", "1.0", "--seconds", "30", "--record", str(reply), timeout=200)
    (result,) = softphone_results(done.stdout)
    assert result["answered"], done.stderr[-3000:]
    assert result["latencies"] and result["latencies"][0] is not None, (result, gw.tail())
    text = transcribe(reply)
    assert "thanks for calling" in text, text  # the greeting
    assert "order number" in text, text  # the order journey's question, after the caller's turn
