"""Closed-set streams: real stream processes decoding real 8 kHz telephone speech frame by frame."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from gateway.config import AsrSettings
from gateway.core.actions import Expect
from gateway.voice.asr import AsrRouter
from gateway.voice.asr.base import AsrError
from gateway.voice.asr.grammar import spoken_digits, yes_no_meaning
from gateway.voice.asr.stream_worker import MAX_STREAM_SECONDS, StreamDecoders, handle
from gateway.voice.asr.streams import ClosedStream, ClosedStreams
from tests.voice.speech_corpus import utterance

FRAME = 320  # 20 ms at 8 kHz


def digits(n: int) -> Expect:
    return Expect(kind="digits", min_digits=n, max_digits=n)


def feed(stream: ClosedStream, pcm: bytes) -> None:
    for i in range(0, len(pcm), FRAME):
        stream.feed(pcm[i:i + FRAME])


@pytest.fixture
async def streams():
    pool = ClosedStreams(workers=2)
    await asyncio.to_thread(pool.start)
    yield pool
    await asyncio.to_thread(pool.close)


@pytest.mark.slow
async def test_a_turn_fed_frame_by_frame_is_answered_as_it_ends(streams: ClosedStreams) -> None:
    u = utterance("one oh two three", voice="heart", telephone=True, ulaw=True)
    stream = streams.open(digits(4), 8000)
    assert stream is not None
    feed(stream, u.pcm)
    so_far = await stream.snapshot()  # judged in a pause: the whole answer is already there
    assert spoken_digits(so_far.text) == "1023", so_far
    final = await stream.finish()
    assert spoken_digits(final.text) == "1023", final
    assert final.engine == "pocketsphinx" and final.decode_seconds < 0.05, final
    assert abs(final.audio_seconds - len(u.pcm) / 16000) < 0.01
    assert streams.open_streams == 0  # the stream is over: its decoder went back to the pool
    with pytest.raises(AsrError):
        await stream.finish()


@pytest.mark.slow
async def test_a_pause_gets_a_whole_answer_where_the_partial_path_is_none(streams: ClosedStreams) -> None:
    """At the pause after "eight two zero oh one" (120 ms of silence, as the endpointer asks) the
    stream's partial path is no answer yet; the snapshot decodes the audio so far whole instead."""
    u = utterance("eight two zero oh one", voice="heart", telephone=True, ulaw=True, lead_s=0.3, trail_s=0.8)
    stream = streams.open(digits(5), 8000)
    assert stream is not None
    pause = int((u.speech_end_s + 0.12) * 8000) * 2
    feed(stream, u.pcm[:pause])
    so_far = await stream.snapshot()
    assert spoken_digits(so_far.text) == "82001", so_far
    feed(stream, u.pcm[pause:])
    assert spoken_digits((await stream.finish()).text) == "82001"


@pytest.mark.slow
async def test_calls_stream_side_by_side_on_two_processes(streams: ClosedStreams) -> None:
    """Six calls' turns interleaved frame by frame, each with its own question, each answered."""
    cases = [("yes", Expect(kind="yesno"), "yes"), ("no thank you", Expect(kind="yesno"), "no"),
             ("three three seven", digits(3), "337"), ("seven one four nine", digits(4), "7149"),
             ("yes please", Expect(kind="yesno"), "yes"), ("one oh two three", digits(4), "1023")]
    clips = [utterance(text, voice="heart-low", telephone=True, ulaw=True).pcm for text, _e, _a in cases]
    opened = [streams.open(expect, 8000) for _t, expect, _a in cases]
    assert all(s is not None for s in opened)
    assert {s.slot.index for s in opened if s is not None} == {0, 1}  # spread over both processes
    for i in range(0, max(map(len, clips)), FRAME):
        for stream, pcm in zip(opened, clips):
            assert stream is not None
            stream.feed(pcm[i:i + FRAME])
    answers = await asyncio.gather(*(s.finish() for s in opened if s is not None))
    heard = [yes_no_meaning(t.text) if e.kind == "yesno" else spoken_digits(t.text)
             for t, (_text, e, _a) in zip(answers, cases)]
    assert sum(h == a for h, (_t, _e, a) in zip(heard, cases)) >= 5, heard


@pytest.mark.slow
async def test_a_killed_process_fails_its_streams_and_is_replaced(streams: ClosedStreams) -> None:
    stream = streams.open(Expect(kind="yesno"), 8000)
    assert stream is not None
    victim = stream.slot.worker.pid
    feed(stream, utterance("yes", telephone=True, ulaw=True).pcm)
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(AsrError):
        await stream.finish()
    for _ in range(300):  # restarted in the background
        if len(streams.worker_pids()) == 2 and victim not in streams.worker_pids():
            break
        await asyncio.sleep(0.05)
    assert victim not in streams.worker_pids() and len(streams.worker_pids()) == 2
    assert streams.stats["restarts"] == 1
    again = [streams.open(Expect(kind="yesno"), 8000) for _ in range(2)]  # one lands on the new process
    for s in again:
        assert s is not None
        feed(s, utterance("yes", telephone=True, ulaw=True).pcm)
    assert [yes_no_meaning((await s.finish()).text) for s in again if s is not None] == ["yes", "yes"]


def test_the_process_bounds_each_stream_and_answers_bad_messages_with_an_error() -> None:
    decoders = StreamDecoders()
    assert handle(decoders, ("open", 1, 8000, Expect(kind="yesno"))) is None
    second = b"\x00\x01" * 8000
    for _ in range(int(MAX_STREAM_SECONDS)):
        assert handle(decoders, ("audio", 1, second)) is None
    reply = handle(decoders, ("audio", 1, second))
    assert reply is not None and reply[:2] == ("error", 1) and "longer than" in reply[2]
    assert handle(decoders, ("end", 1)) is None  # forgotten: late messages are ignored
    assert handle(decoders, ("open", 2, 8000, Expect())) == ("error", 2, "pocketsphinx here only decodes closed "
                                                                       "sets, not 'open'")
    assert handle(decoders, ("open", 3, 8000, Expect(kind="yesno"))) is None
    odd = handle(decoders, ("audio", 3, b"\x00\x00\x00"))
    assert odd is not None and odd[0] == "error" and "not 16-bit" in odd[2]
    assert handle(decoders, ("open", 4, 99, Expect(kind="yesno")))[0] == "error"  # type: ignore[index]


@pytest.mark.slow
async def test_the_router_takes_the_streams_answer_and_decodes_whole_when_it_fails() -> None:
    router = AsrRouter(AsrSettings(cross_check=False), timeout_seconds=30.0, fallback=False)
    await router.start()
    try:
        assert router.streams is not None
        u = utterance("seven one four nine", voice="heart", telephone=True, ulaw=True)
        stream = router.open_stream(digits(4), 8000)
        assert stream is not None
        feed(stream, u.pcm)
        t = await router.recognize(u.pcm, 8000, digits(4), grammar=stream.finish)
        assert spoken_digits(t.text) == "7149" and t.grammar_text == t.text, t
        assert router.stats["streamed"] == 1 and router.stats["streams_opened"] == 1
        # A stream that failed (its process died): the turn is decoded whole, answered all the same.
        stream = router.open_stream(digits(4), 8000)
        assert stream is not None
        feed(stream, u.pcm)
        stream.fail("the closed-set stream process died")
        t = await router.recognize(u.pcm, 8000, digits(4), grammar=stream.finish)
        assert spoken_digits(t.text) == "7149", t
        assert router.stats["stream_failed"] == 1 and router.stats["streamed"] == 1
        assert router.open_stream(Expect(), 8000) is None  # open speech never streams to a grammar
        # The streams are the closed-set engine: no whole-utterance pool runs beside them.
        assert router.engines["pocketsphinx"].worker_pids() == router.streams.worker_pids()
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in router.worker_pids()]
        assert not [c for c in commands if b"closed_worker" in c], commands
        assert len([c for c in commands if b"stream_worker" in c]) == len(router.streams.worker_pids()) >= 1
    finally:
        await router.close()
    assert not router.streams.started


@pytest.mark.slow
async def test_a_call_streams_its_spoken_order_number_and_answers(tmp_path) -> None:
    """The order-status journey through the real core, Whisper and pocketsphinx: the spoken order
    number and the yes/no answer are decoded as they are spoken and the journey goes on."""
    from gateway.app import build_core
    from gateway.config import load_settings
    from gateway.voice.pipeline import VoicePipeline
    from gateway.voice.simulate import SimulatedControl
    from tests.voice.journey_calls import ask_about_an_order, said

    settings = load_settings(overrides={"data_dir": str(tmp_path)})
    core = await build_core(settings)
    pipeline = VoicePipeline(settings, core)
    await pipeline.start()
    try:
        session = pipeline.session(call_id="stream-1", sample_rate=8000, caller_id="+15550142",
                                   control=SimulatedControl())
        await session.start()
        driver = await ask_about_an_order(session)
        await driver.feed(said("one zero zero zero one", 12))
        await driver.wait_for_bot(60)
        texts = [text for _, text in session.transcript]
        assert any("headphones" in t for t in texts), texts  # order 10001 was read out
        assert session.expect.kind == "yesno", texts
        await driver.feed(said("no thank you", 13))
        await driver.wait_for_bot(60)
        stats = pipeline.asr.stats
        assert stats["streams_opened"] >= 2 and stats["streamed"] >= 2 and stats["stream_failed"] == 0, stats
        assert pipeline.asr.streams is not None and pipeline.asr.streams.open_streams == 0
        closed = [t for t in session.stats["turns"] if t["kind"] == "closed"]
        assert len(closed) == 2, session.stats["turns"]
    finally:
        await session.stop()
        await pipeline.close()
        await core.close()
