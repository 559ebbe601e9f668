"""baresip (a different SIP stack) calls the gateway, plays a WAV file and records the reply."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.voice.audio import read_wav
from tests.sip.baresip_peer import call_with_baresip
from tests.sip.conftest import write_tone

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]


def test_baresip_call_audio_both_ways(start_any_gateway, tmp_path) -> None:
    """In process and through the SIP front to a worker."""
    gw = start_any_gateway(mode="echo")  # the session sends back what it hears
    wav = write_tone(tmp_path / "caller.wav", 3.0, freq=700.0)
    received, log = call_with_baresip(f"sip:bot@127.0.0.1:{gw.port}", wav, tmp_path, seconds=10)
    assert "Call established" in log, log[-2000:]
    started = gw.expect("session_started")
    assert started["caller_id"] == "caller" and started["rate"] == 8000
    stopped = gw.expect("session_stopped", timeout=20)
    assert stopped["voiced_in"] >= 100, stopped  # baresip's 3 s of tone reached the session
    pcm, rate = read_wav(received)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    assert np.sqrt(np.mean(samples**2)) > 500, "the reply baresip recorded is silent"
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * rate / len(samples) - 700) < 20  # the echoed tone


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_baresip_speaks_and_the_journeys_reply_is_recognized(start_gateway, tmp_path) -> None:
    """baresip says a caller's turn after the greeting into the real voice pipeline and core; what
    it recorded of the call is read back by Whisper: the greeting, then the order journey's question."""
    from gateway.voice.audio import write_wav
    from tests.sip.test_real_pipeline import transcribe
    from tests.voice.speech_corpus import utterance

    gw = start_gateway(real=True)
    said = utterance("I want to check the status of my order", lead_s=11.0, trail_s=14.0)
    wav = tmp_path / "caller.wav"
    write_wav(wav, said.pcm, said.rate)
    received, log = call_with_baresip(f"sip:bot@127.0.0.1:{gw.port}", wav, tmp_path, seconds=40)
    assert "Call established" in log, log[-2000:]
    text = transcribe(received)
    assert "thanks for calling" in text, (text, gw.tail())  # the greeting
    assert "order number" in text, (text, gw.tail())  # the order journey's question after the turn
