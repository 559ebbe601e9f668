"""Endpointer logic on synthetic probability sequences (no model, fully deterministic)."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.voice.endpoint import (
    EndpointConfig,
    Endpointer,
    MaxUtterance,
    NoInput,
    SpeechCancelled,
    SpeechEnded,
    SpeechOnset,
    SpeechPaused,
    SpeechStarted,
    frame_rms,
)

RATE = 8000
SILENT = bytes(320)


def tone(level: float = 0.3, n: int = 160) -> bytes:
    t = np.arange(n) / RATE
    return (np.sin(2 * np.pi * 440 * t) * level * 32767).astype("<i2").tobytes()


LOUD = tone()


def run(ep: Endpointer, pattern: list[tuple[float, float]], **kw) -> list:
    """pattern: (seconds, probability); speech frames carry a tone, others silence."""
    events = []
    for seconds, prob in pattern:
        for _ in range(int(round(seconds * 50))):
            events.extend(ep.process(prob, LOUD if prob >= 0.3 else SILENT, **kw))
    return events


def kinds(events):
    return [type(e).__name__ for e in events]


def test_turn_boundaries_pre_roll_and_tail():
    ep = Endpointer(EndpointConfig(end_of_turn_ms=600, pre_roll_ms=300, tail_ms=200), RATE)
    events = run(ep, [(1.0, 0.0), (1.5, 0.95), (1.0, 0.02)])
    assert kinds(events) == ["SpeechOnset", "SpeechStarted", "SpeechEnded"]
    started, ended = events[1], events[2]
    assert started.at == pytest.approx(1.0, abs=0.011)
    assert ended.at == pytest.approx(2.5, abs=0.011)
    # decided after end_of_turn_ms of silence
    assert ep.frames * 0.02 == pytest.approx(3.5)
    # audio = 300 ms pre-roll + 1.5 s speech + 200 ms tail
    assert len(ended.audio) == pytest.approx((0.3 + 1.5 + 0.2) * RATE * 2, abs=640)
    assert ended.audio[:200] == bytes(200)  # the pre-roll is the silence before the onset


def test_short_bursts_are_not_turns_and_gaps_do_not_end_a_turn():
    ep = Endpointer(EndpointConfig(min_speech_ms=200, end_of_turn_ms=600), RATE)
    events = run(ep, [(0.5, 0.0), (0.1, 0.9), (1.0, 0.0)])
    assert kinds(events) == ["SpeechOnset", "SpeechCancelled"]
    events = run(ep, [(0.4, 0.9), (0.3, 0.1), (0.4, 0.9), (0.5, 0.1), (0.3, 0.9), (0.7, 0.0)])
    assert kinds(events) == ["SpeechOnset", "SpeechStarted", "SpeechEnded"]
    assert events[-1].at - events[1].at == pytest.approx(0.4 + 0.3 + 0.4 + 0.5 + 0.3, abs=0.03)


def test_hysteresis_keeps_a_turn_through_weak_frames():
    ep = Endpointer(EndpointConfig(threshold=0.5, hysteresis=0.15), RATE)
    events = run(ep, [(0.5, 0.9), (1.0, 0.4), (0.8, 0.0)])
    assert kinds(events) == ["SpeechOnset", "SpeechStarted", "SpeechEnded"]
    # 0.4 is above the release threshold (0.35), so speech lasted 1.5 s
    assert events[-1].at - events[1].at == pytest.approx(1.5, abs=0.05)


def test_max_utterance_cuts_then_waits_for_a_pause():
    ep = Endpointer(EndpointConfig(max_utterance_seconds=5.0, end_of_turn_ms=600), RATE)
    events = run(ep, [(0.2, 0.0), (12.0, 0.9)])
    assert kinds(events) == ["SpeechOnset", "SpeechStarted", "MaxUtterance"]
    cut = events[-1]
    assert isinstance(cut, MaxUtterance)
    assert cut.at == pytest.approx(0.2 + 5.0, abs=0.05)
    assert len(cut.audio) <= (5.0 + 0.3) * RATE * 2
    events = run(ep, [(1.0, 0.0), (1.0, 0.9), (1.0, 0.0)])
    assert kinds(events) == ["SpeechOnset", "SpeechStarted", "SpeechEnded"]


def test_no_input_timer():
    ep = Endpointer(EndpointConfig(), RATE)
    run(ep, [(1.0, 0.0)])
    ep.arm_no_input(3.0)
    events = run(ep, [(2.9, 0.0)])
    assert events == []
    events = run(ep, [(0.2, 0.0)])
    assert len(events) == 1 and isinstance(events[0], NoInput)
    assert events[0].waited == pytest.approx(3.0, abs=0.021)
    assert run(ep, [(10.0, 0.0)]) == []  # fires once
    ep.arm_no_input(3.0)
    events = run(ep, [(1.0, 0.9), (5.0, 0.0)])
    assert kinds(events) == ["SpeechOnset", "SpeechStarted", "SpeechEnded"]  # speech disarms it


def test_speculative_pause_comes_before_the_end():
    ep = Endpointer(EndpointConfig(speculative_ms=200, end_of_turn_ms=600), RATE)
    events = run(ep, [(0.3, 0.0), (1.0, 0.9), (0.3, 0.0), (0.5, 0.9), (1.0, 0.0)])
    assert kinds(events) == ["SpeechOnset", "SpeechStarted", "SpeechPaused", "SpeechPaused", "SpeechEnded"]
    first_pause, last_pause, end = events[2], events[3], events[4]
    assert isinstance(first_pause, SpeechPaused) and first_pause.at < end.at
    assert last_pause.at == end.at and last_pause.audio == end.audio


def test_barge_in_needs_longer_speech_while_the_bot_talks():
    cfg = EndpointConfig(min_speech_ms=100, barge_in_min_ms=300)
    ep = Endpointer(cfg, RATE)
    events = []
    for i in range(50):
        events += ep.process(0.9 if i >= 10 else 0.0, tone(0.5) if i >= 10 else SILENT, bot_level=0.2)
    started = [e for e in events if isinstance(e, SpeechStarted)]
    onset = [e for e in events if isinstance(e, SpeechOnset)]
    assert onset and onset[0].during_playback and onset[0].at == pytest.approx(0.2, abs=0.021)
    assert started and started[0].barge_in
    # confirmed after barge_in_min_ms of speech, not min_speech_ms
    assert ep.frames > 0
    ep2 = Endpointer(cfg, RATE)
    confirm_frame = None
    for i in range(50):
        for e in ep2.process(0.9 if i >= 10 else 0.0, tone(0.5) if i >= 10 else SILENT, bot_level=0.2):
            if isinstance(e, SpeechStarted):
                confirm_frame = i
    assert confirm_frame == 10 + 300 // 20 - 1


def test_no_barge_in_when_the_prompt_forbids_it():
    ep = Endpointer(EndpointConfig(), RATE)
    events = []
    for _ in range(100):
        events += ep.process(0.95, tone(0.5), bot_level=0.3, barge_in_allowed=False)
    assert events == []


def test_echo_of_the_bot_does_not_start_a_turn_but_louder_speech_does():
    ep = Endpointer(EndpointConfig(), RATE)
    bot = tone(0.4)
    echo = tone(0.4 * 0.25)  # the line returns the bot 12 dB down
    assert frame_rms(echo) < frame_rms(bot)
    events = []
    for _ in range(150):  # 3 s of bot speech leaking back, the VAD calls it speech
        events += ep.process(0.97, echo, bot_level=frame_rms(bot))
    assert events == []
    assert ep._echo.coupling == pytest.approx(0.25, rel=0.2)
    caller = tone(0.5)
    for _ in range(30):
        events += ep.process(0.97, caller, bot_level=frame_rms(bot))
    assert [type(e) for e in events][:2] == [SpeechOnset, SpeechStarted]
    assert events[1].barge_in


def test_echo_that_comes_after_a_silent_greeting_is_learned_not_taken_for_speech():
    """A line silent through the greeting teaches the gate that there is no echo (coupling at its
    floor); when the echo comes later (a speakerphone, a line that starts leaking) the estimate
    must rise to it instead of letting the bot's voice through as the caller's for the rest of
    the call. Found as a bot cut short by the echo of its own voice resuming after a nod."""
    ep = Endpointer(EndpointConfig(), RATE)
    bot = tone(0.4)
    events = []
    for _ in range(150):  # 3 s of greeting, the line silent
        events += ep.process(0.02, SILENT, bot_level=frame_rms(bot))
    assert ep._echo.coupling < 0.05
    echo = tone(0.4 * 0.3)  # then the line returns the bot 10 dB down
    for i in range(100):  # 2 s of it; the VAD calls a frame of it speech now and then
        events += ep.process(0.97 if i % 10 == 0 else 0.4, echo, bot_level=frame_rms(bot))
    assert 0.15 < ep._echo.coupling <= 0.3  # on its way to the line's (the silent greeting decays)
    events.clear()
    for _ in range(30):  # the bot's voice the VAD is sure of: still echo
        events += ep.process(0.97, echo, bot_level=frame_rms(bot))
    assert events == []


def test_cancelled_onset_during_playback():
    ep = Endpointer(EndpointConfig(), RATE)
    events = []
    for i in range(40):
        speaking = 5 <= i < 8
        events += ep.process(0.9 if speaking else 0.0, tone(0.5) if speaking else SILENT, bot_level=0.1)
    assert kinds(events) == ["SpeechOnset", "SpeechCancelled"]
    assert isinstance(events[1], SpeechCancelled)


def test_speech_ended_is_a_dataclass_with_audio():
    ep = Endpointer(EndpointConfig(), RATE)
    events = run(ep, [(0.4, 0.0), (0.6, 0.9), (0.8, 0.0)])
    ended = [e for e in events if isinstance(e, SpeechEnded)][0]
    assert len(ended.audio) % 320 == 0 and ended.started_at == pytest.approx(0.4, abs=0.011)
