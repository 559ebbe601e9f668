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
import os
import struct
import uuid

import numpy as np

from bench._common import WARMUP_SECONDS, caller_audio, run_callers, start_pipeline

LATE_LIMIT = 0.100


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


async def run_load(calls: int, seconds: float, vad: str) -> dict[str, float]:
    from gateway.telephony.audiosocket_server import AudioSocketServer

    settings, pipeline = await start_pipeline(vad, {"audiosocket": {"port": 0, "read_timeout_seconds": 10}})
    server = AudioSocketServer(settings, pipeline)
    await server.start()
    run = await run_callers(_one_caller, server.port, calls, seconds, connected=lambda: len(server.active),
                            pacer=server.pacer)
    await server.close()
    await pipeline.close()
    results = run.results
    return {
        **run.figures(),
        "rx_max_gap_ms": 1000 * max(r["max_gap"] for r in results),
        "rx_ratio": sum(r["received"] for r in results) / max(1, sum(r["expected"] for r in results)),
        "ended_early": sum(r["early"] for r in results),
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
