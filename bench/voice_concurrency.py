"""Concurrent calls in one process, ticking in real time: frame lateness and turn latency.

    .venv/bin/python -m bench.voice_concurrency [--calls 2 5 10] [--seconds 30]

Each simulated call is a connector stand-in: every 20 ms of wall time it pushes 20 ms of caller
audio and pulls 20 ms of bot audio (one asyncio task per call, absolute schedule, as the
AudioSocket and SIP connectors do). Callers speak about 40 % of the time: corpus utterances
(see bench/turn_latency.py for the corpus) alternating open questions and yes/no answers,
separated by pauses, talking whether or not the bot has finished (so barge-in happens too).

Reported per load: the worst and p99 frame lateness (how late a tick ran against its 20 ms
schedule; a connector's audio breaks up when this passes ~100 ms), turn latency p50/p95 for open
and closed turns, and CPU use. A load is "sustained" when no frame was later than 100 ms and
the turn latency stayed within 1.5 s (open) / 0.5 s (closed) p95 after the end-of-turn window.

Watchdog: a load that has not finished ``HANG_MARGIN_S`` after its calls should have ended is
reported as hung, with the stack of every asyncio task and every thread, and the bench stops
there instead of waiting forever; a process-wide ``faulthandler`` deadline dumps the threads and
exits if the event loop itself is blocked so that the first watchdog cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import random
import sys
import tempfile
import time
from typing import Any

from bench.turn_latency import AlternatingCore, build_engines, caller_turns, pct
from gateway.config import load_settings

LATE_LIMIT = 0.100
SPEECH_SHARE = 0.4
HANG_MARGIN_S = 60.0
"""A load (or the shutdown) still running this long after it should have ended is reported as hung."""
STARTUP_S = 300.0
"""Engine start-up allowance in the process-wide deadline."""


class LoadHung(RuntimeError):
    """A load or the shutdown overran the watchdog; the stacks were printed."""


def dump_stacks(reason: str) -> None:
    """Print every asyncio task's stack and every thread's stack to stdout."""
    print(f"WATCHDOG: {reason}; asyncio tasks and threads follow", flush=True)
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            print(f"--- task {task.get_name()}", flush=True)
            task.print_stack(limit=10, file=sys.stdout)
    sys.stdout.flush()
    faulthandler.dump_traceback(file=sys.stdout, all_threads=True)
    sys.stdout.flush()


async def bounded(aw: Any, seconds: float, what: str) -> Any:
    """Await ``aw``; after ``seconds`` print the stacks, cancel it and raise ``LoadHung``."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        dump_stacks(f"{what} did not finish within {seconds:.0f} s")
        task.cancel()
        await asyncio.wait({task}, timeout=10)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: the hang is what gets reported
        raise LoadHung(what)
    return task.result()


def caller_script(turns: list[bytes], seconds: float, rate: int, rng: random.Random) -> bytes:
    """Utterances separated by pauses so that speech fills about 40 % of ``seconds``."""
    out = bytearray(b"\x00\x00" * int(rate * rng.uniform(2.0, 4.0)))  # the greeting plays first
    k = 0
    while len(out) < seconds * rate * 2:
        utt = turns[k % len(turns)]
        k += 1
        out += utt
        pause = len(utt) / (2 * rate) * (1 - SPEECH_SHARE) / SPEECH_SHARE * rng.uniform(0.7, 1.3)
        out += b"\x00\x00" * int(pause * rate)
    return bytes(out[: int(seconds * rate) * 2])


def worker_pids(pipeline: Any) -> list[int]:
    """Recognizer worker processes (their CPU counts too)."""
    if hasattr(pipeline.asr, "worker_pids"):
        return list(pipeline.asr.worker_pids())
    pool = getattr(pipeline.asr, "_whisper", None)
    try:
        return list(pool.worker_pids()) if pool is not None else []
    except (AttributeError, TypeError):
        return []


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of this process and of ``pids`` (from /proc)."""
    t = os.times()
    total = t.user + t.system
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


async def one_call(pipeline: Any, call_no: int, audio: bytes, rate: int, lateness: list[float]) -> Any:
    session = pipeline.session(call_id=f"bench-{call_no}", sample_rate=rate)
    await session.start()
    fb = session.frame_bytes
    t0 = time.perf_counter()
    for tick, i in enumerate(range(0, len(audio) - fb + 1, fb)):
        due = t0 + tick * 0.02
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(max(0.0, time.perf_counter() - due))
        session.push_audio(audio[i : i + fb])
        session.pull_frame()
        if session.ended.is_set():
            break
    stats = session.stats
    await session.stop()
    return stats


async def run_load(pipeline: Any, calls: int, seconds: float, rate: int, pool: list[bytes]) -> dict[str, Any]:
    rng = random.Random(calls)
    scripts = []
    for c in range(calls):
        turns = pool[:]
        rng.shuffle(turns)
        scripts.append(caller_script(turns, seconds, rate, rng))
    lateness: list[float] = []
    pids = worker_pids(pipeline)
    cpu0, t0 = cpu_seconds(pids), time.perf_counter()
    results = await bounded(asyncio.gather(*(one_call(pipeline, c, scripts[c], rate, lateness) for c in range(calls))),
                            seconds + HANG_MARGIN_S, f"the {calls}-call load")
    cpu, wall = cpu_seconds(pids) - cpu0, time.perf_counter() - t0
    turns = [t for r in results for t in r["turns"] if t["total"] is not None]
    out: dict[str, Any] = {"calls": calls, "max_late": max(lateness, default=0.0),
                           "p99_late": pct(lateness, 0.99) if lateness else 0.0,
                           "cpu_share": cpu / wall / (os.cpu_count() or 1), "turns": len(turns),
                           "barge_ins": sum(len(r["barge_ins"]) for r in results),
                           "wasted": sum(r.get("speculative_discarded", 0) for r in results)}
    for kind in ("open", "closed"):
        after = [t["total"] - t["endpoint_wait"] for t in turns if t["kind"] == kind]
        out[f"{kind}_p50"] = pct(after, 0.5)
        out[f"{kind}_p95"] = pct(after, 0.95)
        out[f"{kind}_n"] = len(after)
        for stage in ("recognition", "queue", "tts"):
            vals = [t[stage] for t in turns if t["kind"] == kind and t[stage] is not None]
            out[f"{kind}_{stage}_p95"] = pct(vals, 0.95)
    out["sustained"] = (out["max_late"] <= LATE_LIMIT and not (out["open_p95"] > 1.5)
                        and not (out["closed_p95"] > 0.5))
    return out


async def main_async(args: argparse.Namespace) -> None:
    from gateway.voice.pipeline import VoicePipeline

    settings = load_settings(overrides={"data_dir": tempfile.mkdtemp(prefix="voicegw-bench-")})
    asr, tts, note = await build_engines(settings)
    pipeline = VoicePipeline(settings, AlternatingCore(), asr=asr, tts=tts)
    await pipeline.start()
    await pipeline.vad_pool.prewarm(args.rate, max(args.calls))
    pool = caller_turns(12, args.rate, seed=3)
    print(f"{os.cpu_count()} cores, {args.rate} Hz, {args.seconds:.0f} s per load, {note}, "
          f"speculative {settings.voice.endpoint.speculative_ms or 'off'}, VAD {pipeline.vad_pool.engine}, TTS {tts.engine_name}; caller speech ~{SPEECH_SHARE:.0%}; "
          f"load average before start {os.getloadavg()[0]:.1f}")
    print(" calls  max-late  p99-late   cpu   turns  open p50/p95 (s)  closed p50/p95 (s)  barge-ins  sustained")
    best = 0
    for calls in args.calls:
        pipeline.core = AlternatingCore()
        try:
            r = await run_load(pipeline, calls, args.seconds, args.rate, pool)
        except LoadHung:
            print(f"{calls:6d}  HUNG (stacks above); later loads skipped")
            break
        print(f"{calls:6d} {r['max_late'] * 1000:7.0f}ms {r['p99_late'] * 1000:7.0f}ms {r['cpu_share']:5.0%}"
              f" {r['turns']:6d}  {r['open_p50']:6.2f} / {r['open_p95']:5.2f}     "
              f"{r['closed_p50']:6.2f} / {r['closed_p95']:5.2f}     {r['barge_ins']:6d}     "
              f"{'yes' if r['sustained'] else 'no'}")
        print(f"        speculative decodes wasted: {r['wasted']}; stage p95 (s): " + ", ".join(
            f"{kind} {stage} {r[f'{kind}_{stage}_p95']:.2f}"
            for kind in ("open", "closed") for stage in ("recognition", "queue", "tts")))
        if r["sustained"]:
            best = max(best, calls)
    print(f"sustained with every frame within {LATE_LIMIT * 1000:.0f} ms and turn latency held: "
          f"{best} calls (loads tried: {args.calls})")
    for closing, what in ((pipeline.close(), "the sessions"), (asr.close(), "the recognizer"),
                          (tts.close(), "the synthesizer")):
        try:
            await bounded(closing, HANG_MARGIN_S, f"closing {what}")
        except LoadHung:
            print(f"closing {what} HUNG (stacks above)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=8000, choices=(8000, 16000))
    args = parser.parse_args()
    # Last resort if the event loop itself is blocked: dump every thread and exit.
    deadline = STARTUP_S + sum(args.seconds + 2 * HANG_MARGIN_S for _ in args.calls) + 3 * HANG_MARGIN_S
    faulthandler.dump_traceback_later(deadline, exit=True, file=sys.stdout)
    try:
        asyncio.run(main_async(args))
    finally:
        faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    main()
