"""VoiceSession through real VAD and real TTS, with a scripted core and a scripted recognizer.

The caller's audio is real synthesized speech (tests/voice/speech_corpus.py) over a telephone
band; the recognizer stand-in returns a scripted transcript for each utterance it is given and
records the audio it received, so the tests check what the session does with audio and text
(turn taking, barge-in, no-input, DTMF, failures) independently of recognition accuracy, which
the speech engine tests cover.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np
import pytest

from gateway.config import load_settings
from gateway.core.actions import Ask, Expect, Hangup, Say, Transfer
from gateway.core.events import (
    CallStarted,
    ChannelClosed,
    DtmfPressed,
    RecognitionFailed,
    Silence,
    UserSaid,
)
from gateway.core.port import Opened
from gateway.voice.asr.base import Urgency
from gateway.voice.pipeline import VoicePipeline
from gateway.voice.simulate import CallDriver, run_call
from tests.voice.speech_corpus import concatenate, utterance

RATE = 8000
FB = 320


@dataclass(frozen=True)
class FakeTranscript:
    text: str
    confidence: float = 0.9
    engine: str = "scripted"
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0
    queue_seconds: float = 0.0
    grammar_text: str | None = None


class ScriptedAsr:
    """Answers each utterance with the next scripted text (or raises what is scripted)."""

    saturated = False  # a recognizer is always idle for a speculative decode

    def __init__(self, answers: list[object], *, by_call_order: bool = False):
        self.answers = list(answers)
        self.calls: list[tuple[bytes, int, Expect]] = []
        self.urgencies: list[Urgency | None] = []  # each call's (None: urgent)
        # by_call_order: the n-th call gets the n-th answer even if an earlier call is cancelled
        # before it finishes (otherwise a cancelled call leaves its answer to the next one).
        self.by_call_order = by_call_order

    def _next(self) -> object:
        return self.answers.pop(0) if self.answers else ""

    def open_stream(self, expect: Expect, sample_rate: int) -> None:
        return None  # scripted answers only: no closed-set stream

    async def recognize(self, pcm: bytes, sample_rate: int, expect: Expect, *, urgency: Urgency | None = None) -> FakeTranscript:
        self.calls.append((pcm, sample_rate, expect))
        self.urgencies.append(urgency)
        early = self._next() if self.by_call_order else None
        await asyncio.sleep(0.01)
        answer = early if self.by_call_order else self._next()
        if isinstance(answer, BaseException):
            raise answer
        return FakeTranscript(str(answer), audio_seconds=len(pcm) / (2 * sample_rate))


class ScriptedCore:
    """A ConversationPort that answers events from a small script."""

    def __init__(self, greeting: list, replies: dict | None = None, fail_on: type | None = None):
        self.greeting = greeting
        self.replies = replies or {}
        self.fail_on = fail_on
        self.events: list = []
        self.opened: dict = {}

    async def open(self, channel, *, caller_id="", customer_id="", conversation_id="", journey="", event=None,
                   **proofs):
        self.opened = {"channel": channel, "caller_id": caller_id, "journey": journey}
        self.events.append(event)
        return Opened(conversation_id or "conv-1", False, list(self.greeting))

    async def handle(self, conversation_id, event, *, session_id=""):
        self.events.append(event)
        if self.fail_on is not None and isinstance(event, self.fail_on):
            raise RuntimeError("dialog store unavailable")
        reply = self.replies.get(type(event), [])
        return list(reply(event) if callable(reply) else reply)

    async def context(self, conversation_id):
        return {}

    def register_sink(self, action_type, sink):
        return None

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


class Control:
    def __init__(self, transfer_ok: bool = True):
        self.transfers: list = []
        self.hangups: list[str] = []
        self.transfer_ok = transfer_ok

    async def transfer(self, conversation_id, action):
        self.transfers.append((conversation_id, action))
        return self.transfer_ok

    async def hangup(self, reason):
        self.hangups.append(reason)


@pytest.fixture(scope="module")
def tts(tmp_path_factory):
    from gateway.voice.tts import Synthesizer

    settings = load_settings(overrides={"data_dir": str(tmp_path_factory.mktemp("tts"))})
    synth = Synthesizer(settings.voice.tts, cache_dir=settings.data_path("prompt-cache"))
    yield synth


async def make_session(tmp_path, tts, core, asr, control=None, **endpoint):
    overrides = {"data_dir": str(tmp_path)}
    if endpoint:
        overrides["voice"] = {"endpoint": endpoint}
    settings = load_settings(overrides=overrides)
    pipeline = VoicePipeline(settings, core, asr=asr, tts=tts)
    await pipeline.start()
    session = pipeline.session(call_id="call-1", sample_rate=RATE, caller_id="+15550100", control=control)
    await session.start()
    return pipeline, session


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


async def test_turn_goes_to_core_and_reply_is_spoken(tmp_path, tts):
    core = ScriptedCore(
        [Ask("Hello. How can I help?", expect=Expect(kind="open"))],
        {UserSaid: [Ask("Is that for your last order?", expect=Expect(kind="yesno")), ], },
    )
    asr = ScriptedAsr(["I want to check my order"])
    pipeline, session = await make_session(tmp_path, tts, core, asr)
    caller = utterance("I want to check the status of my order", snr_db=20, seed=1)
    driver = await run_call(session, caller.pcm)
    assert isinstance(core.events[0], CallStarted)
    said = core.of(UserSaid)
    assert [e.text for e in said] == ["I want to check my order"]
    # the audio recognized is the caller's speech with its first syllable (pre-roll) and end
    pcm, rate, expect = asr.calls[0]
    assert rate == RATE and expect.kind == "open"
    got = len(pcm) / (2 * RATE)
    assert got >= caller.speech_end_s - caller.speech_start_s
    assert got <= caller.speech_end_s - caller.speech_start_s + 0.9
    assert session.expect.kind == "yesno"
    # greeting, then the reply: the bot's audio has two bursts of speech
    bot = np.frombuffer(bytes(driver.bot_audio), dtype="<i2").astype(np.float32)
    assert np.abs(bot).max() > 1000
    turn = session.stats["turns"][0]
    assert turn["kind"] == "open" and turn["total"] is not None
    assert turn["endpoint_wait"] == pytest.approx(0.6, abs=0.15)
    assert [who for who, _ in session.transcript] == ["bot", "caller", "bot"]
    await session.stop()
    assert isinstance(core.events[-1], ChannelClosed)
    await pipeline.close()


async def test_no_input_after_prompt_sends_silence(tmp_path, tts):
    core = ScriptedCore([Ask("Please say something.", expect=Expect(kind="open", no_input_seconds=2.0))],
                        {Silence: [Hangup("no input")]})
    control = Control()
    pipeline, session = await make_session(tmp_path, tts, core, ScriptedAsr([]), control)
    driver = CallDriver(session)
    prompt_end = None
    for _ in range(50 * 30):
        await driver.tick()
        if prompt_end is None and not session.playback.talking and session.playback.ticks > 5:
            prompt_end = driver.ticks * 0.02
        if session.ended.is_set():
            break
    assert session.ended.is_set() and session.end_reason == "no input"
    silences = core.of(Silence)
    assert len(silences) == 1 and silences[0].seconds == pytest.approx(2.0, abs=0.05)
    assert control.hangups == ["no input"]
    # the timer started when the prompt had finished playing, not when it was queued
    assert driver.ticks * 0.02 >= prompt_end + 2.0 - 0.05
    await session.stop()
    await pipeline.close()


async def test_dtmf_digits_go_to_core_one_event_per_digit(tmp_path, tts):
    core = ScriptedCore([Ask("Enter your four digit PIN.", expect=Expect(kind="digits", min_digits=4, max_digits=4))])
    pipeline, session = await make_session(tmp_path, tts, core, ScriptedAsr([]))
    driver = CallDriver(session)
    for _ in range(10):
        await driver.tick()
    assert session.playback.talking
    for d in "1234":
        session.push_dtmf(d)
        await driver.tick()
    assert not session.playback.talking  # key press interrupts the prompt
    for _ in range(20):
        await driver.tick()
    assert [e.digit for e in core.of(DtmfPressed)] == list("1234")
    # a shorter entry is sent after the inter-digit pause; '#' sends at once
    session.expect = Expect(kind="digits", max_digits=6)
    session.push_dtmf("5")
    session.push_dtmf("6")
    for _ in range(50):
        await driver.tick()
    assert [e.digit for e in core.of(DtmfPressed)] == list("1234")
    for _ in range(60):
        await driver.tick()
    assert [e.digit for e in core.of(DtmfPressed)] == list("123456")
    session.push_dtmf("7")
    session.push_dtmf("#")
    await driver.tick()
    assert [e.digit for e in core.of(DtmfPressed)][-2:] == ["7", "#"]
    session.push_dtmf("x")  # not a DTMF key: ignored
    await session.stop()
    await pipeline.close()


async def test_recognizer_error_is_a_failed_turn_not_a_failed_call(tmp_path, tts):
    from gateway.voice.vad import VadError

    core = ScriptedCore([Ask("How can I help?")],
                        {RecognitionFailed: [Ask("Sorry, could you repeat that?")], UserSaid: [Say("Thanks.")]})
    asr = ScriptedAsr([RuntimeError("decoder crashed"), "", "my bill"])
    pipeline, session = await make_session(tmp_path, tts, core, asr)
    u = utterance("there is a wrong charge on my bill", snr_db=20, seed=2)
    caller = concatenate([u, u, u], gap_s=1.5)
    await run_call(session, caller)
    failed = core.of(RecognitionFailed)
    assert len(failed) == 2
    assert "decoder crashed" in failed[0].reason
    assert [e.text for e in core.of(UserSaid)] == ["my bill"]
    assert not session.ended.is_set()
    assert VadError  # bad frames are covered in test_vad
    await session.stop()
    await pipeline.close()


async def test_core_failure_apologizes_and_ends_only_this_call(tmp_path, tts):
    core = ScriptedCore([Ask("How can I help?")], fail_on=UserSaid)
    control = Control()
    pipeline, session = await make_session(tmp_path, tts, core, ScriptedAsr(["hello"]), control)
    other = pipeline.session(call_id="call-2", sample_rate=RATE)
    await other.start()
    u = utterance("I am calling about my account", snr_db=20, seed=3)
    driver = await run_call(session, u.pcm)
    assert session.ended.is_set() and session.end_reason == "error"
    assert control.hangups == ["error"]
    assert ("bot", "Sorry, something went wrong on our side. Please call again later. Goodbye.") in session.transcript
    assert len(driver.bot_audio) > 0
    assert not other.ended.is_set()
    other.push_audio(silence(0.1))
    assert len(other.pull_frame()) == FB
    await pipeline.close()


async def test_transfer_after_announcement(tmp_path, tts):
    core = ScriptedCore([Say("Connecting you to an agent."), Transfer(queue="billing")])
    control = Control()
    pipeline, session = await make_session(tmp_path, tts, core, ScriptedAsr([]), control)
    driver = CallDriver(session)
    ticks_at_transfer = None
    for _ in range(50 * 20):
        await driver.tick()
        if control.transfers and ticks_at_transfer is None:
            ticks_at_transfer = driver.ticks
            assert not session.playback.talking  # announcement had played
        if session.ended.is_set():
            break
    assert control.transfers and control.transfers[0][1].queue == "billing"
    assert session.end_reason == "transferred"
    assert ticks_at_transfer > 30
    await session.stop()
    await pipeline.close()


async def test_bad_audio_does_not_break_the_session(tmp_path, tts):
    core = ScriptedCore([Ask("Hello?")])
    pipeline, session = await make_session(tmp_path, tts, core, ScriptedAsr([]))
    session.push_audio(b"")
    session.push_audio(b"\x01")  # half a sample: kept until the rest arrives
    session.push_audio(b"\x00" * 333)  # not a whole frame
    session.push_audio(b"\x00" * 7)
    assert len(session.pull_frame()) == FB
    assert session.endpointer.frames == 1  # 1 + 333 + 7 = 341 bytes: one frame, 21 kept
    assert not session.ended.is_set()
    await session.stop()
    session.push_audio(b"\x00" * FB)  # after stop: ignored
    assert len(session.pull_frame()) == FB
    await pipeline.close()


LONG_PROMPT = ("Thank you for calling. Our offices are open from eight in the morning until six in the "
               "evening, Monday to Friday. You can also manage your account on our website at any time.")


async def talk_over_prompt(session, caller_pcm: bytes, *, start_after: float, echo_gain: float,
                           echo_delay_frames: int = 3, seconds: float = 12.0):
    """Tick the call: caller audio from ``start_after`` on, plus the bot's own audio leaking
    back ``echo_gain`` down after ``echo_delay_frames``. Returns per-tick (time, talking, paused)."""
    played: list[np.ndarray] = []
    trace = []
    begin = int(start_after * 50)
    for tick in range(int(seconds * 50)):
        k = tick - begin
        frame = np.zeros(FB // 2, np.float32)
        if 0 <= k and (k + 1) * FB <= len(caller_pcm):
            frame += np.frombuffer(caller_pcm[k * FB:(k + 1) * FB], dtype="<i2").astype(np.float32)
        if tick >= echo_delay_frames and len(played) > tick - echo_delay_frames:
            frame += played[tick - echo_delay_frames] * echo_gain
        session.push_audio(np.clip(frame, -32768, 32767).astype("<i2").tobytes())
        out = session.pull_frame()
        played.append(np.frombuffer(out, dtype="<i2").astype(np.float32))
        trace.append((tick * 0.02, session.playback.talking, session.playback.paused))
        await asyncio.sleep(0)
        while session.busy and not session.playback.has_audio and not session.ended.is_set():
            await session.wait_progress(timeout=5.0)
    return trace


async def test_barge_in_stops_playback_within_100_ms_of_speech_onset(tmp_path, tts):
    core = ScriptedCore([Ask(LONG_PROMPT)], {UserSaid: [Say("Okay.")]})
    pipeline, session = await make_session(tmp_path, tts, core, ScriptedAsr(["agent please"]))
    caller = utterance("I would like to speak to an agent", snr_db=30, lead_s=0.0, trail_s=1.0, seed=5)
    trace = await talk_over_prompt(session, caller.pcm, start_after=2.0, echo_gain=0.2)
    onset = 2.0 + caller.speech_start_s
    stopped = next(t for t, talking, paused in trace if t >= onset - 0.2 and (paused or not talking))
    assert onset - 0.02 <= stopped <= onset + 0.100, (onset, stopped)
    assert len(session.barge_ins) == 1
    assert session.barge_ins[0]["onset"] == pytest.approx(onset, abs=0.06)
    assert session.barge_ins[0]["dropped_seconds"] > 2.0  # the rest of the prompt was dropped
    assert [e.text for e in core.of(UserSaid)] == ["agent please"]
    await session.stop()
    await pipeline.close()


@pytest.mark.parametrize("gain", [0.1, 0.3])
async def test_bot_echo_at_lower_level_does_not_barge_in(tmp_path, tts, gain):
    core = ScriptedCore([Ask(LONG_PROMPT)])
    pipeline, session = await make_session(tmp_path, tts, core, ScriptedAsr([]))
    trace = await talk_over_prompt(session, b"", start_after=0.0, echo_gain=gain, echo_delay_frames=4, seconds=14)
    assert session.barge_ins == []
    assert not any(paused for _, _, paused in trace)
    assert core.of(UserSaid) == [] and core.of(RecognitionFailed) == []
    assert not session.playback.talking  # the whole prompt played
    await session.stop()
    await pipeline.close()


async def test_speculative_decode_is_spent_once_per_turn(tmp_path, tts):
    core = ScriptedCore([Ask("How can I help?")], {UserSaid: [Say("Sure.")]})
    # By call order: whether the speculative decode is cancelled before it finishes depends on how
    # fast the driver's virtual time runs; either way it must not be the turn's transcript.
    asr = ScriptedAsr(["wasted", "my account has a wrong charge"], by_call_order=True)
    pipeline, session = await make_session(tmp_path, tts, core, asr, speculative_ms=250)
    a = utterance("I am calling about my account", snr_db=25, seed=7, lead_s=0.5, trail_s=0.2)
    b = utterance("there is a wrong charge on my bill", snr_db=25, seed=8, lead_s=0.2, trail_s=1.0)
    await run_call(session, concatenate([a, b], gap_s=0.0), wait=False)
    assert len(asr.calls) == 2  # one speculative decode at the pause, one at the end
    assert session.speculative_discarded == 1
    wasted, final = asr.urgencies
    assert wasted is not None and not wasted.urgent  # a guess to the end: never ahead of an ended turn
    assert final is not None and final.urgent  # the turn's own decode
    assert [e.text for e in core.of(UserSaid)] == ["my account has a wrong charge"]
    await session.stop()
    await pipeline.close()


async def test_speculative_recognition_during_the_end_of_turn_window(tmp_path, tts):
    core = ScriptedCore([Ask("How can I help?")], {UserSaid: [Say("Sure.")]})
    asr = ScriptedAsr(["my package never arrived"])
    pipeline, session = await make_session(tmp_path, tts, core, asr, speculative_ms=300)
    caller = utterance("my package never arrived", snr_db=25, seed=6)
    await run_call(session, caller.pcm)
    assert [e.text for e in core.of(UserSaid)] == ["my package never arrived"]
    assert len(asr.calls) == 1  # the speculative decode was used, not repeated
    turn = session.stats["turns"][0]
    assert turn["speculative"]
    # Made in the pause as a guess, urgent once the turn ended with it (it would otherwise wait
    # behind every turn other callers end after it on a busy recognizer).
    assert asr.urgencies[0] is not None and asr.urgencies[0].urgent
    await session.stop()
    await pipeline.close()


@pytest.mark.parametrize("expect, said", [
    (Expect(kind="digits", min_digits=5, max_digits=8), "four five six seven eight"),
    (Expect(), "my package never arrived"),
])
async def test_a_busy_recognizer_gets_no_guesses_in_the_pauses(tmp_path, tts, expect, said):
    """Every Whisper worker busy: the turn waits for its window and is decoded once, at its end (a
    guess queued in the pause cost 24 calls 0.62 -> 0.98 s p95 on their order numbers)."""
    core = ScriptedCore([Ask("Your order number?", expect=expect)], {UserSaid: [Say("Thanks.")]})
    asr = ScriptedAsr([said])
    asr.saturated = True
    pipeline, session = await make_session(tmp_path, tts, core, asr, speculative_ms=120)
    await run_call(session, utterance(said, snr_db=25, seed=6).pcm)
    assert [e.text for e in core.of(UserSaid)] == [said]
    assert len(asr.calls) == 1 and asr.urgencies[0] is not None and asr.urgencies[0].urgent
    assert not session.stats["turns"][0]["speculative"]
    await session.stop()
    await pipeline.close()


class SlowCore(ScriptedCore):
    """A core that takes ``delay`` seconds of wall time to answer (a slow CRM lookup), or only the
    first time when ``once``."""

    def __init__(self, *args, delay: float, once: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.delay = delay
        self.once = once

    async def handle(self, conversation_id, event, *, session_id=""):
        delay, self.delay = self.delay, (0.0 if self.once else self.delay)
        await asyncio.sleep(delay)
        return await super().handle(conversation_id, event, session_id=session_id)


async def caller_goes_on(tmp_path, tts, *, delay: float, answers: list[str], then: str, once: bool = False):
    """The caller says "I am calling about my order", pauses past the window and goes on with
    ``then`` while a core slow by ``delay`` seconds works out the answer to the first half."""
    core = SlowCore([Ask("How can I help?")], {UserSaid: lambda e: [Say(f"About {e.text}.")]}, delay=delay,
                    once=once)
    pipeline, session = await make_session(tmp_path, tts, core, ScriptedAsr(answers), speculative_ms=0)
    driver = CallDriver(session, realtime=True)
    await driver.wait_for_bot(10)
    first = utterance("I am calling about my order", snr_db=25, seed=7, lead_s=0.3, trail_s=0.75)
    second = utterance(then, snr_db=25, seed=8, lead_s=0.0, trail_s=0.2)
    await driver.feed(first.pcm + second.pcm)
    await driver.wait_for_bot(10)
    return core, pipeline, session


async def test_an_answer_does_not_start_over_a_caller_who_went_on(tmp_path, tts):
    """The answer to the first half comes while they speak. It waits instead of talking over
    them, and their new turn replaces it."""
    core, pipeline, session = await caller_goes_on(tmp_path, tts, delay=0.4,
                                                   answers=["my order", "my order and my bill"],
                                                   then="and there is a wrong charge on my bill")
    assert [e.text for e in core.of(UserSaid)] == ["my order", "my order and my bill"]
    said = [text for who, text in session.transcript if who == "bot"]
    assert said == ["How can I help?", "About my order and my bill."], session.transcript  # never "About my order."
    assert session.stats["premature_cutins"] == 1
    await session.stop()
    await pipeline.close()


async def test_a_turn_held_up_behind_slow_work_is_logged(tmp_path, tts, caplog):
    """The core takes 3 s over the first turn, and the caller's second, ended 1.4 s into it, waits
    for it in the call's work queue: one warning names the call, how long the turn waited and
    behind what."""
    with caplog.at_level(logging.WARNING, logger="gateway.voice.session"):
        core, pipeline, session = await caller_goes_on(tmp_path, tts, delay=3.0, once=True,
                                                       answers=["my order", "yes"], then="yes")
    assert [e.text for e in core.of(UserSaid)] == ["my order", "yes"]
    slow = [r.getMessage() for r in caplog.records if "waited" in r.getMessage()]
    assert len(slow) == 1 and slow[0].startswith("call call-1: the caller's turn waited 1."), slow
    assert slow[0].endswith(" s for the call's earlier work (CallerTurn, 3.0 s)"), slow
    await session.stop()
    await pipeline.close()


async def test_ten_minute_monologue_is_cut_at_max_utterance(tmp_path, tts):
    core = ScriptedCore([Ask("How can I help?")], {UserSaid: [Say("Let me stop you there.")]})
    asr = ScriptedAsr(["a very long story"])
    pipeline, session = await make_session(tmp_path, tts, core, asr, speculative_ms=0)
    parts = [utterance(text, snr_db=25, seed=k, lead_s=0.1, trail_s=0.1)
             for k, text in enumerate(["I am calling about my account", "there is a wrong charge on my bill",
                                       "I was charged twice for the same order", "please cancel my subscription"])]
    one_round = concatenate(parts, gap_s=0.15)
    monologue = one_round * int(600 / (len(one_round) / (2 * RATE)) + 1)
    assert len(monologue) / (2 * RATE) >= 600
    await run_call(session, monologue, wait=False)
    limit = session.endpointer.config.max_utterance_seconds
    assert len(asr.calls) >= 1
    for pcm, _, _ in asr.calls:  # every piece recognized is bounded
        assert len(pcm) / (2 * RATE) <= limit + 0.5
    assert session.stats["turns"][0]["cut"]
    assert [e.text for e in core.of(UserSaid)][0] == "a very long story"
    assert not session.ended.is_set()
    await session.stop()
    await pipeline.close()


class BrokenTts:
    """Synthesis that fails for one text (an engine error) and works for the rest."""

    def __init__(self, real, bad: str):
        self.real, self.bad = real, bad

    async def synthesize(self, text, sample_rate, prompt_id=""):
        if self.bad in text:
            raise RuntimeError("voice model failed to load")
        return await self.real.synthesize(text, sample_rate, prompt_id)


async def test_synthesis_failure_skips_the_prompt_and_keeps_the_call(tmp_path, tts):
    core = ScriptedCore([Say("Welcome."), Ask("Broken question?", expect=Expect(no_input_seconds=1.0))],
                        {Silence: [Ask("Are you still there?")]})
    pipeline, session = await make_session(tmp_path, BrokenTts(tts, "Broken"), core, ScriptedAsr([]))
    driver = CallDriver(session)
    for _ in range(50 * 6):
        await driver.tick()
    assert len(core.of(Silence)) >= 1  # the no-input timer still ran after the failed prompt
    assert ("bot", "Are you still there?") in session.transcript
    assert not session.ended.is_set()
    await session.stop()
    await pipeline.close()


async def test_barge_in_also_drops_the_rest_of_the_answer(tmp_path, tts):
    core = ScriptedCore([Say(LONG_PROMPT), Say("This sentence must not be spoken."), Ask("Nor this one?")],
                        {UserSaid: [Say("Okay.")]})
    pipeline, session = await make_session(tmp_path, tts, core, ScriptedAsr(["agent"]))
    caller = utterance("I would like to speak to an agent", snr_db=30, lead_s=0.0, trail_s=1.0, seed=5)
    await talk_over_prompt(session, caller.pcm, start_after=1.5, echo_gain=0.0, seconds=8)
    assert len(session.barge_ins) == 1
    spoken = [text for who, text in session.transcript if who == "bot"]
    assert "This sentence must not be spoken." not in spoken and "Nor this one?" not in spoken
    assert spoken[-1] == "Okay."
    await session.stop()
    await pipeline.close()


def test_playback_queue_paces_pauses_clears_and_bounds():
    from gateway.voice.playback import Playback

    pb = Playback(FB, max_queued_seconds=1.0)
    finished = []
    first = pb.start_prompt("one")
    first.on_finished = lambda p: finished.append(p.text)
    assert pb.append(first, b"\x01\x00" * 250)  # 500 bytes: one frame and a partial
    assert pb.pull_frame() == b"\x01\x00" * 160
    assert pb.pull_frame() == bytes(FB)  # synthesis has not caught up: silence, still talking
    assert pb.talking and not finished
    pb.close_prompt(first)  # the partial frame is padded
    assert pb.pull_frame()[:180] == b"\x01\x00" * 90 and finished == ["one"]
    assert not pb.talking and pb.pull_frame() == bytes(FB)
    second = pb.start_prompt("two")
    pb.append(second, b"\x02\x00" * 160 * 3)
    pb.close_prompt(second)
    pb.pause()
    assert pb.pull_frame() == bytes(FB) and pb.talking
    pb.resume()
    assert pb.pull_frame() == b"\x02\x00" * 160
    assert pb.clear() == 2 and second.cut and not pb.talking
    assert not pb.append(second, b"\x02\x00" * 160)  # a cut prompt takes no more audio
    big = pb.start_prompt("three")
    assert not pb.append(big, bytes(FB * 80))  # more than 1 s queued: refused past the bound
    assert pb.queued_seconds == pytest.approx(1.0)


class StopRacingCore(ScriptedCore):
    """Answers with an already finished future and, on the first UserSaid, starts ``session.stop()``
    so that its cancellation reaches the worker in the loop iteration where the answer arrives."""

    session = None
    stopping: asyncio.Task | None = None

    def handle(self, conversation_id, event, *, session_id=""):  # not async on purpose: the answer is ready at once
        self.events.append(event)
        if isinstance(event, UserSaid) and self.stopping is None:
            self.stopping = asyncio.ensure_future(self.session.stop())
        answer = asyncio.get_running_loop().create_future()
        answer.set_result([])
        return answer


async def test_stop_ends_the_call_even_when_its_cancel_meets_a_finished_answer(tmp_path, tts):
    """Python 3.11's wait_for returns a finished result and drops a cancellation arriving in the
    same loop iteration; stop() must still end the session instead of waiting forever."""
    core = StopRacingCore([Ask("Hello. How can I help?", expect=Expect(kind="open"))])
    asr = ScriptedAsr(["I want to check my order"])
    pipeline, session = await make_session(tmp_path, tts, core, asr)
    core.session = session
    caller = utterance("I want to check the status of my order", snr_db=20, seed=1)
    await run_call(session, caller.pcm, wait=False)
    deadline = asyncio.get_running_loop().time() + 60
    while core.stopping is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert core.stopping is not None, "the caller's turn never reached the core"
    await asyncio.wait_for(core.stopping, 30)
    assert session.ended.is_set() and isinstance(core.events[-1], ChannelClosed)
    await pipeline.close()


class GatedCore(ScriptedCore):
    """Holds its answer to the first caller turn until ``gate`` is set (a slow dialog backend)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def handle(self, conversation_id, event, *, session_id=""):
        if isinstance(event, UserSaid) and len(self.of(UserSaid)) == 0:
            self.events.append(event)
            await self.gate.wait()
            return [Ask("Which order do you mean?", expect=Expect(kind="open"))]
        return await super().handle(conversation_id, event)


async def test_an_answer_overtaken_by_the_callers_next_turn_is_not_spoken(tmp_path, tts):
    """The caller speaks again while the answer to their first turn is still being worked out:
    that answer is stale and stays unsaid; the answer to their latest turn is spoken."""
    core = GatedCore([Say("Hello.")], {UserSaid: [Ask("Thanks, got it.", expect=Expect(kind="open"))]})
    asr = ScriptedAsr(["check my order", "the blue headphones"])
    pipeline, session = await make_session(tmp_path, tts, core, asr)
    driver = CallDriver(session, realtime=True)
    await driver.wait_for_bot(5)
    await driver.feed(utterance("I want to check my order", seed=3).pcm + silence(1.0))
    assert len(core.of(UserSaid)) == 1  # the first turn is with the (slow) core
    await driver.feed(utterance("the blue headphones", seed=4).pcm + silence(1.0))
    assert session.pending_turn is not None  # the second turn has ended and waits
    core.gate.set()
    await driver.wait_for_bot(10)
    bot = [text for who, text in session.transcript if who == "bot"]
    assert bot == ["Hello.", "Thanks, got it."], session.transcript
    assert [e.text for e in core.of(UserSaid)] == ["check my order", "the blue headphones"]
    assert session.stats["superseded_replies"] == 1
    await session.stop()
    await pipeline.close()


class SlowAsr(ScriptedAsr):
    """A recognizer that is busy elsewhere: every answer comes after ``delay`` seconds of wall time."""

    def __init__(self, answers: list[object], delay: float):
        super().__init__(answers)
        self.delay = delay

    async def recognize(self, pcm, sample_rate, expect, *, urgency=None):
        await asyncio.sleep(self.delay)
        return await super().recognize(pcm, sample_rate, expect, urgency=urgency)


async def test_a_nod_whose_transcript_is_late_is_a_barge_in_not_a_silent_bot(tmp_path, tts):
    """Speech over the bot's statement pauses it; without a transcript within 0.8 s of audio (a
    busy recognizer) the bot does not stay silent: the speech is taken as a barge-in."""
    core = ScriptedCore([Say(LONG_PROMPT)], {UserSaid: [Say("Okay.")]})
    pipeline, session = await make_session(tmp_path, tts, core, SlowAsr(["okay"], delay=3.0))
    nod = utterance("okay", snr_db=30, lead_s=0.0, trail_s=2.5, seed=6)
    trace = await talk_over_prompt(session, nod.pcm, start_after=1.5, echo_gain=0.0, seconds=4.5)
    assert [b["backchannel"] for b in session.barge_ins] == [False], session.barge_ins
    confirmed = session.barge_ins[0]["confirmed"]
    assert confirmed - (1.5 + nod.speech_end_s) < 0.8 + 0.6 + 0.1  # its end, then at most 0.8 s undecided
    assert not any(paused for t, talking, paused in trace if t > confirmed)  # never left paused
    await session.stop()
    await pipeline.close()
