"""What the telephony load benches share (``audiosocket_calls``, ``twilio_streams``).

A voice pipeline whose recognizer and synthesizer cost nothing (so the figures are the cost of
the telephony path), speech-like caller audio, and one measured load: callers run in a separate
process (their cost is not counted) while this process's CPU and the lateness of the
gateway's 20 ms clock are measured over the run.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np

WARMUP_SECONDS = 2.0
"""Calls connect and settle before the measured period (VAD models are built beforehand)."""

KNOWN_CUSTOMERS = (("+15551234567", "one, zero, zero, zero, one"), ("+15559876543", "two, zero, zero, zero, one"),
                   ("+15554445555", "four, zero, zero, zero, two"), ("+15558889999", "six, zero, zero, zero, two"))
"""Customers of the sample CRM with orders, and one order of each as they say it. A call from one of
these numbers is greeted by name (a claim only); a journey bench has such a caller say their own
order number (a customer who gives another's is told it is not theirs and asked again)."""

OneCaller = Callable[[Any, float, int], Awaitable[dict[str, float]]]
"""``one_caller(target, seconds, seed)``: one call against ``target`` (a port, a URL), its figures."""


LINE_NOISE_DBFS = -51.0
"""The callers' line hiss, all through a call (under the words and between them): about 30 dB
under the corpus speech (-21 dBFS RMS), the speech-to-noise ratio the corpus is tested at. One
level throughout, as on a real line: speech files carrying their own noise at 30 dB SNR with the
line at -60 dBFS between them put a 10 dB noise step after every word, which the endpointer
took for 100-200 ms more speech (and a bench measuring from the gateway's speech end did not
count)."""


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """Memory of the processes ``pids`` in MB: the sum of their RSS (a page several processes
    share, a library's code or a parent's pages, is counted in each) and of their PSS (a shared
    page divided among the processes sharing it: what they hold together). Gone processes count 0."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                rss += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
            with open(f"/proc/{pid}/smaps_rollup") as f:
                pss += next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
        except (OSError, ValueError):
            continue
    return rss / 1024, pss / 1024


class MemoryPeak:
    """The largest ``memory_mb`` of ``pids`` seen while it runs, sampled every ``every`` seconds
    in a thread (for benches whose measuring side blocks)."""

    def __init__(self, pids: list[int], every: float = 2.0):
        import threading

        self.pids, self.every = pids, every
        self.rss, self.pss = memory_mb(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-peak", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        rss, pss = memory_mb(self.pids)
        self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)

    def __enter__(self) -> "MemoryPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


class NoopAsr:
    """Answers every turn at once with an empty transcript."""

    saturated = False

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def open_stream(self, expect: Any, sample_rate: int) -> None:
        return None

    async def recognize(self, pcm: bytes, sample_rate: int, expect: Any, *, urgency: Any = None) -> Any:
        from gateway.voice.asr import Transcript

        return Transcript(text="", confidence=0.0, engine="noop", audio_seconds=len(pcm) / (2 * sample_rate),
                          decode_seconds=0.0)


class ToneTts:
    """0.8 s of a 440 Hz tone per prompt (no synthesis cost)."""

    async def synthesize(self, text: str, sample_rate: int, prompt_id: str = "") -> bytes:
        n = int(sample_rate * 0.8)
        t = np.arange(n) / sample_rate
        return (np.sin(2 * np.pi * 440 * t) * 3000).astype("<i2").tobytes()

    async def stream(self, text: str, sample_rate: int, prompt_id: str = ""):
        yield await self.synthesize(text, sample_rate, prompt_id)


class EchoCore:
    """A conversation core that greets and then asks again after every turn."""

    def __init__(self) -> None:
        self.n = 0

    async def open(self, channel: str, **kwargs: Any) -> Any:
        from gateway.core.actions import Ask
        from gateway.core.port import Opened

        self.n += 1
        return Opened(f"bench-{self.n}", False, [Ask("Hello, how can I help?")])

    async def handle(self, conversation_id: str, event: Any, *, session_id: str = "") -> list[Any]:
        from gateway.core.actions import Ask

        if event.kind in ("UserSaid", "Silence", "RecognitionFailed", "DtmfPressed"):
            return [Ask("Could you say that again?")]
        return []

    async def context(self, conversation_id: str) -> dict[str, Any]:
        return {}

    def register_sink(self, action_type: type, sink: Any) -> None:
        return None


def caller_audio(seconds: float, seed: int) -> bytes:
    """Noise bursts of 0.6-1.5 s separated by 0.5-2 s of near silence, 8 kHz."""
    rng = np.random.default_rng(seed)
    out = []
    total = 0
    while total < seconds * 8000:
        quiet = int(rng.uniform(0.5, 2.0) * 8000)
        loud = int(rng.uniform(0.6, 1.5) * 8000)
        out.append(rng.normal(0, 20, quiet))
        env = np.sin(np.linspace(0, np.pi, loud)) * rng.uniform(1500, 4000)
        out.append(rng.normal(0, 1, loud) * env)
        total += quiet + loud
    pcm = np.clip(np.concatenate(out)[: int(seconds * 8000)], -32768, 32767).astype("<i2")
    return pcm.tobytes()


async def start_pipeline(vad: str, overrides: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Settings (a fresh data directory, ``vad``, ``overrides``) and a started pipeline with
    the no-cost recognizer, synthesizer and core; the silero VAD model is loaded once."""
    from gateway.config import load_settings
    from gateway.voice.pipeline import VoicePipeline

    settings = load_settings(environ={}, overrides={
        # the benches measure how many calls the engines hold: the node's cap (voice.max_calls) is lifted
        "data_dir": tempfile.mkdtemp(prefix="voicegw-bench-"), "voice": {"vad": {"engine": vad}, "max_calls": 100_000},
        **(overrides or {}),
    })
    pipeline = VoicePipeline(settings, EchoCore(), asr=NoopAsr(), tts=ToneTts())
    await pipeline.start()
    return settings, pipeline


@dataclass
class LoadRun:
    """One measured load: each caller's figures, this process's CPU and the 20 ms clock's
    timing over the period."""

    calls: int
    results: list[dict[str, float]]
    cpu: float
    wall: float
    pacing: Any

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu / self.wall

    @property
    def cpu_ms_per_call_s(self) -> float:
        """CPU milliseconds per second of one call."""
        return 1000 * self.cpu / self.wall / self.calls

    def figures(self) -> dict[str, float]:
        """The figures every telephony load reports."""
        return {
            "calls": self.calls,
            "cpu_pct": self.cpu_pct,
            "cpu_ms_per_call_s": self.cpu_ms_per_call_s,
            "tick_max_late_ms": 1000 * self.pacing.max_late,
            "tick_mean_late_ms": 1000 * self.pacing.mean_late,
            "skipped_ticks": self.pacing.skips,
        }


def _callers(one_caller: OneCaller, target: Any, calls: int, seconds: float, out: Any) -> None:
    async def run() -> list[dict[str, float]]:
        return await asyncio.gather(*(one_caller(target, seconds, i) for i in range(calls)))

    out.put(asyncio.run(run()))


async def run_callers(
    one_caller: OneCaller,
    target: Any,
    calls: int,
    seconds: float,
    *,
    connected: Callable[[], int],
    pacer: Any,
) -> LoadRun:
    """Run ``calls`` callers in another process; once ``connected()`` reaches ``calls`` (or the
    callers are done) and ``WARMUP_SECONDS`` have passed, measure CPU and the timing of
    ``pacer`` (the server's :class:`~gateway.telephony.media_pacer.MediaPacer`) for
    ``seconds - 0.5``. Returns when every caller has finished."""
    from gateway.telephony.media_pacer import PacingStats

    ctx = mp.get_context("spawn")
    queue: Any = ctx.Queue()
    proc = ctx.Process(target=_callers, args=(one_caller, target, calls, seconds, queue))
    proc.start()
    loop = asyncio.get_running_loop()
    results_future = loop.run_in_executor(None, queue.get)
    while connected() < calls and not results_future.done():
        await asyncio.sleep(0.05)
    await asyncio.sleep(WARMUP_SECONDS)
    pacer.stats = PacingStats()
    cpu0, t0 = os.times(), time.perf_counter()
    await asyncio.sleep(seconds - 0.5)
    cpu1, wall = os.times(), time.perf_counter() - t0
    results = await results_future
    await loop.run_in_executor(None, proc.join)
    cpu = cpu1.user - cpu0.user + cpu1.system - cpu0.system
    return LoadRun(calls, results, cpu, wall, pacer.stats)
