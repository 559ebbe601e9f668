"""Closed-set recognition in a pool of pocketsphinx worker processes: calls' digits decode side by
side, a worker that dies or stalls is replaced alone, a pool of one serializes as before."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from gateway.config import AsrSettings
from gateway.core.actions import Expect
from gateway.voice.asr import AsrError, AsrRouter
from gateway.voice.asr.closed import ClosedSetProcess
from gateway.voice.asr.grammar import spoken_digits
from tests.voice.speech_corpus import utterance

DIGITS = "zero nine eight seven six five four three"
ANY_LENGTH = Expect(kind="digits")  # the 1-24 digit grammar: about 0.7 s of decoding for this clip


def _decode_span(ended: float, decode_seconds: float) -> tuple[float, float]:
    """When the worker decoded: it answered at ``ended`` after ``decode_seconds`` of its own clock."""
    return ended - decode_seconds, ended


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def test_pool_size_follows_the_cores_and_is_at_least_one() -> None:
    from gateway.voice.asr.closed import closed_workers_for

    assert closed_workers_for(0) == max(1, os.cpu_count() or 1)
    assert closed_workers_for(1) == 1 and closed_workers_for(3) == 3
    assert AsrSettings().closed_workers == 0


async def test_two_calls_digits_decode_side_by_side_in_two_workers() -> None:
    router = AsrRouter(AsrSettings(open_engine="pocketsphinx", closed_workers=2, closed_streaming=False),
                       fallback=False)
    await router.start()
    try:
        assert len(router.worker_pids()) == 2 and os.getpid() not in router.worker_pids()
        clip = utterance(DIGITS)

        async def one() -> tuple[float, float, str, float]:
            t = await router.recognize(clip.pcm, clip.rate, ANY_LENGTH)
            return time.perf_counter(), t.decode_seconds, t.text, t.queue_seconds

        (end_a, dec_a, text_a, queue_a), (end_b, dec_b, text_b, queue_b) = await asyncio.gather(one(), one())
        assert spoken_digits(text_a) == spoken_digits(text_b) == "09876543"
        # Each decoded while the other did: one worker each, not one after the other.
        shared = _overlap(_decode_span(end_a, dec_a), _decode_span(end_b, dec_b))
        assert shared >= 0.5 * min(dec_a, dec_b), (dec_a, dec_b, end_a, end_b)
        assert max(queue_a, queue_b) < 0.5 * min(dec_a, dec_b)  # neither waited for the other's decode
    finally:
        await router.close()


async def test_backlog_counts_only_the_requests_beyond_the_workers() -> None:
    router = AsrRouter(AsrSettings(open_engine="pocketsphinx", closed_workers=2, closed_streaming=False),
                       fallback=False)
    await router.start()
    try:
        clip = utterance(DIGITS)
        two = [asyncio.ensure_future(router.recognize(clip.pcm, clip.rate, ANY_LENGTH)) for _ in range(2)]
        await asyncio.sleep(0.1)
        assert router.closed.backlog == 0 and not router._grammar_queued()  # a worker each: nobody waits
        third = asyncio.ensure_future(router.recognize(clip.pcm, clip.rate, ANY_LENGTH))
        await asyncio.sleep(0.05)
        assert router.closed.backlog == 1 and router._grammar_queued()
        results = await asyncio.gather(*two, third)
        assert router.closed.backlog == 0
        assert all(spoken_digits(t.text) == "09876543" for t in results)
        # The third waited for the first worker to come free, then decoded.
        assert results[2].queue_seconds >= 0.5 * min(t.decode_seconds for t in results[:2])
    finally:
        await router.close()


def test_a_killed_worker_is_restarted_alone_and_the_other_request_is_unaffected() -> None:
    pool = ClosedSetProcess("pocketsphinx", workers=2, request_timeout=60.0)
    pool.start()
    try:
        before = pool.worker_pids()
        clip = utterance(DIGITS)
        pcm = clip.pcm + clip.pcm  # about 3.7 s of decoding: long enough to kill it midway
        answers: dict[int, tuple[str, float]] = {}

        def ask(n: int) -> None:
            answers[n] = (pool.recognize(pcm, clip.rate, ANY_LENGTH).text, time.perf_counter())

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while pool.busy < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.busy == 2
        time.sleep(0.3)
        killed_at = time.perf_counter()
        os.kill(before[0], signal.SIGKILL)
        for thread in threads:
            thread.join(60)
        assert sorted(answers) == [0, 1]
        assert all(spoken_digits(text) == "09876543" * 2 for text, _ in answers.values()), answers
        assert pool.stats["restarts"] == 1
        after = pool.worker_pids()
        assert after[1] == before[1] and after[0] != before[0]  # only the killed worker was replaced
        first, second = sorted(ended for _, ended in answers.values())
        # The untouched worker answered while the killed one's request was retried on a fresh worker.
        assert killed_at < first < second
    finally:
        pool.close()
    assert not any(_running(pid) for pid in after)


def test_pool_of_one_decodes_one_request_after_the_other() -> None:
    pool = ClosedSetProcess("pocketsphinx")  # the default: one worker, as the gateway ran before the pool
    pool.start()
    try:
        assert pool.size == 1 and len(pool.worker_pids()) == 1
        clip = utterance(DIGITS)
        spans: list[tuple[float, float]] = []
        lock = threading.Lock()

        def ask() -> None:
            t = pool.recognize(clip.pcm, clip.rate, ANY_LENGTH)
            with lock:
                spans.append(_decode_span(time.perf_counter(), t.decode_seconds))

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(spans) == 2
        assert _overlap(*spans) < 0.05  # one worker: the second decode starts when the first ends
    finally:
        pool.close()


def test_waiting_for_a_worker_is_bounded_by_the_request_timeout() -> None:
    pool = ClosedSetProcess("pocketsphinx", workers=1, request_timeout=2.0)
    pool.start()
    try:
        [pid] = pool.worker_pids()
        os.kill(pid, signal.SIGSTOP)  # alive, never answers: it holds the only worker for 2 s
        clip = utterance("yes")
        errors: list[str] = []

        def ask() -> None:
            try:
                pool.recognize(clip.pcm, clip.rate, Expect(kind="yesno"))
            except AsrError as exc:
                errors.append(str(exc))

        stalled = threading.Thread(target=ask)
        stalled.start()
        while pool.busy < 1:
            time.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(AsrError, match="no pocketsphinx worker came free within 2 s"):
            pool.recognize(clip.pcm, clip.rate, Expect(kind="yesno"))
        assert 1.5 < time.monotonic() - started < 5.0
        stalled.join(30)
        assert errors and "overran" in errors[0]
        assert pool.worker_pids() and pool.worker_pids() != [pid] and not _running(pid)
        assert pool.recognize(clip.pcm, clip.rate, Expect(kind="yesno")).text in ("yes", "yeah")  # 8 kHz: either
    finally:
        pool.close()


def test_a_closed_pool_refuses_requests() -> None:
    pool = ClosedSetProcess("pocketsphinx", workers=2)
    pool.start()
    pids = pool.worker_pids()
    pool.close()
    with pytest.raises(AsrError, match="shut down"):
        pool.recognize(utterance("yes").pcm, 8000, Expect(kind="yesno"))
    assert not any(_running(pid) for pid in pids)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
