"""How many concurrent AudioSocket calls one gateway process holds (telephony path only).

    .venv/bin/python -m bench.audiosocket_calls [--calls 10 50 100] [--seconds 8] [--vad silero]

The gateway side runs in this process: the real AudioSocket server and the real voice pipeline
(VAD, endpointing, playback queue, 20 ms pacing), with the recognizer replaced by a no-op that
answers at once and the synthesizer by a tone generator, so the figures are the cost of the
telephony path alone. The callers run in a separate process (so their cost is not counted):
each is a fake Asterisk ``AudioSocket()`` that sends its UUID, then a 20 ms frame of caller
audio (speech-like noise bursts) every 20 ms, and reads the gateway's frames.

Reported per load: gateway CPU (process user+system time over wall time) and CPU per call, the
worst lateness of the gateway's 20 ms tick loop, the worst gap between two frames as received
by a caller, frames received against frames expected, and calls that ended early. A load is
"held" when every call lasted and no tick ran more than 100 ms late.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import struct
import tempfile
import time
import uuid
from typing import Any

import numpy as np

LATE_LIMIT = 0.100


class NoopAsr:
    """Answers every turn at once with an empty transcript."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def recognize(self, pcm: bytes, sample_rate: int, expect: Any) -> Any:
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

    async def handle(self, conversation_id: str, event: Any) -> list[Any]:
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


WARMUP_SECONDS = 2.0
"""Calls connect and settle before the measured period (VAD models are built beforehand)."""


async def _one_caller(port: int, seconds: float, seed: int) -> dict[str, float]:
    from gateway.telephony import audiosocket as asock

    audio = caller_audio(seconds + WARMUP_SECONDS, seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(asock.encode_uuid(uuid.uuid4()))
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    ended_early = asyncio.Event()

    async def receive() -> None:
        try:
            while True:
                head = await reader.readexactly(3)
                _, length = struct.unpack(">BH", head)
                if length:
                    await reader.readexactly(length)
                arrivals.append(loop.time())
        except (asyncio.IncompleteReadError, ConnectionError):
            ended_early.set()

    task = asyncio.create_task(receive())
    start = loop.time()
    frames = len(audio) // 320
    for n in range(frames):
        if ended_early.is_set():
            break
        writer.write(asock.encode_audio(audio[n * 320:(n + 1) * 320]))
        await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - loop.time()))
    early = ended_early.is_set()
    writer.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    measured = [t for t in arrivals if t >= start + WARMUP_SECONDS + 0.5]
    gaps = np.diff(measured) if len(measured) > 2 else np.array([0.0])
    expected = int((frames * 0.02 - WARMUP_SECONDS - 0.5) / 0.02)
    return {"received": len(measured), "expected": max(1, expected), "max_gap": float(gaps.max()),
            "early": float(early)}


def _callers(port: int, calls: int, seconds: float, out: Any) -> None:
    async def run() -> list[dict[str, float]]:
        return await asyncio.gather(*(_one_caller(port, seconds, i) for i in range(calls)))

    out.put(asyncio.run(run()))


async def run_load(calls: int, seconds: float, vad: str) -> dict[str, float]:
    from gateway.config import load_settings
    from gateway.telephony.audiosocket_server import AudioSocketServer
    from gateway.voice.pipeline import VoicePipeline

    settings = load_settings(environ={}, overrides={
        "data_dir": tempfile.mkdtemp(prefix="voicegw-bench-"),
        "audiosocket": {"port": 0, "read_timeout_seconds": 10},
        "voice": {"vad": {"engine": vad}},
    })
    pipeline = VoicePipeline(settings, EchoCore(), asr=NoopAsr(), tts=ToneTts())
    await pipeline.start()
    if vad == "silero":
        await pipeline.vad_pool.prewarm(8000, calls)
    server = AudioSocketServer(settings, pipeline)
    await server.start()
    queue: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_callers, args=(server.port, calls, seconds, queue))
    proc.start()
    loop = asyncio.get_running_loop()
    results_future = loop.run_in_executor(None, queue.get)
    while len(server.active) < calls and not results_future.done():
        await asyncio.sleep(0.05)
    await asyncio.sleep(WARMUP_SECONDS)
    server.pacer.stats = type(server.pacer.stats)()
    cpu0, t0 = os.times(), time.perf_counter()
    await asyncio.sleep(seconds - 0.5)
    cpu1, wall = os.times(), time.perf_counter() - t0
    results = await results_future
    await loop.run_in_executor(None, proc.join)
    await server.close()
    await pipeline.close()
    cpu = cpu1.user - cpu0.user + cpu1.system - cpu0.system
    return {
        "calls": calls,
        "cpu_pct": 100 * cpu / wall,
        "cpu_ms_per_call_s": 1000 * cpu / wall / calls,
        "tick_max_late_ms": 1000 * server.pacing.max_late,
        "tick_mean_late_ms": 1000 * server.pacing.mean_late,
        "rx_max_gap_ms": 1000 * max(r["max_gap"] for r in results),
        "rx_ratio": sum(r["received"] for r in results) / max(1, sum(r["expected"] for r in results)),
        "ended_early": sum(r["early"] for r in results),
        "skipped_ticks": server.pacing.skips,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--vad", choices=["silero", "webrtc"], default="silero")
    args = parser.parse_args()
    print(f"AudioSocket calls in one gateway process (ASR no-op, tone TTS, VAD {args.vad}, "
          f"{args.seconds:.0f} s per load, {os.cpu_count()} CPUs)")
    print(f"{'calls':>6} {'cpu %':>7} {'cpu ms/call/s':>14} {'tick late max':>14} {'tick late mean':>15} "
          f"{'rx gap max':>11} {'rx/expected':>12} {'early':>6} held")
    held = 0
    per_call: list[float] = []
    for calls in args.calls:
        r = asyncio.run(run_load(calls, args.seconds, args.vad))
        ok = r["ended_early"] == 0 and r["tick_max_late_ms"] < LATE_LIMIT * 1000
        held = calls if ok else held
        if ok:
            per_call.append(r["cpu_ms_per_call_s"])
        print(f"{calls:>6} {r['cpu_pct']:>7.1f} {r['cpu_ms_per_call_s']:>14.2f} {r['tick_max_late_ms']:>12.1f}ms "
              f"{r['tick_mean_late_ms']:>13.2f}ms {r['rx_max_gap_ms']:>9.1f}ms {r['rx_ratio']:>12.3f} "
              f"{int(r['ended_early']):>6} {'yes' if ok else 'no'}", flush=True)
    print(f"largest load held: {held} concurrent calls (no call dropped, no tick later than "
          f"{LATE_LIMIT * 1000:.0f} ms)")
    if per_call:
        cost = per_call[-1]
        print(f"CPU per call at the largest load held: {cost:.1f} ms per second of call "
              f"({cost / 10:.2f} % of one core), about {1000 / cost:.0f} calls per core on this path")


if __name__ == "__main__":
    main()
