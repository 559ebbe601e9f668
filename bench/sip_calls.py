"""SIP leg figures: mouth-to-ear turn latency, simultaneous calls with clean audio, media CPU.

    .venv/bin/python -m bench.sip_calls [--calls 2] [--skip-latency] [--workers 4]

Everything runs on loopback with real SIP and RTP: the gateway's SIP channel in one process (or
with ``sip.workers``: the gateway process and its SIP worker processes behind the SIP front), the
softphone (pjsua2, its own endpoint; 4 calls per process) in others, on the same cores.

1. Turn latency: the gateway runs the real core and voice pipeline; the softphone waits for each
   prompt to end, says a turn (synthesized speech), and measures from its last voiced frame sent
   to the first voiced frame of the reply received (everything a caller waits through:
   endpointing, recognition, the journey, synthesis, both jitter buffers). p50/p95 over turns.
2. Simultaneous calls: the gateway's sessions play a tone; 1..4 calls at once on one process,
   then 4, 8, ... on one node with workers; per call the caller counts silent frames inside the
   tone (gaps) and the gateway counts underruns.
3. Media-path CPU: time inside the call's AudioMediaPort callbacks per second of call, and the
   gateway process's whole CPU per call (pjsip RTP, codecs and bridge included).
4. ``frame.buf`` access: the slow SWIG path against the data-pointer copy the port uses.

Prints figures; never fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TURNS = ("I want to check the status of my order", "four five six one two")


# ---- the gateway role (a subprocess) ------------------------------------------------------------
class _ToneSession:
    def __init__(self, call_id: str, sample_rate: int = 8000, **_: Any) -> None:
        self.call_id = call_id
        self.frame_bytes = sample_rate // 50 * 2
        self.sample_rate = sample_rate
        self.conversation_id = "bench"
        self.ended = asyncio.Event()
        self._phase = 0

    async def start(self) -> None:
        return None

    def push_audio(self, pcm: bytes) -> None:
        return None

    def push_dtmf(self, digit: str) -> None:
        return None

    def pull_frame(self) -> bytes:
        n = self.frame_bytes // 2
        t = (np.arange(n) + self._phase) / self.sample_rate
        self._phase += n
        return (np.sin(2 * np.pi * 440.0 * t) * 8000).astype("<i2").tobytes()

    async def stop(self, reason: str = "hangup") -> None:
        return None


class _TonePipeline:
    def session(self, **kwargs: Any) -> _ToneSession:
        return _ToneSession(**kwargs)


async def _serve(real: bool, data_dir: str, workers: int) -> None:
    from gateway.config import load_settings
    from gateway.telephony.sip.channel import start_sip_channel

    settings = load_settings(overrides={"data_dir": data_dir, "sip": {"enabled": True, "port": 0,
                                                                      "workers": workers, "max_calls": 64}})
    core: Any = None
    pipeline: Any = _TonePipeline()
    if real:
        from gateway.app import build_core
        from gateway.voice.pipeline import VoicePipeline

        core = await build_core(settings)
        pipeline = VoicePipeline(settings, core)
        await pipeline.start()
    channel = await start_sip_channel(settings, core, pipeline)
    pids = [os.getpid()] + [w["pid"] for w in (await channel.stats()).get("workers", [])]
    print(json.dumps({"port": channel.port, "pids": pids}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    last: list[dict[str, float]] = []
    while True:
        try:
            line = await asyncio.wait_for(reader.readline(), 0.5)
        except asyncio.TimeoutError:
            stats = (await channel.stats())["media"]
            if stats:
                last = stats
            continue
        if not line or line.strip() == b"quit":
            break
        if line.strip() == b"stats":
            print(json.dumps({"media": last}), flush=True)
            last = []
    await channel.close()
    if real:
        await pipeline.close()
        await core.store.close()


# ---- the measuring side -----------------------------------------------------------------------
class Gateway:
    def __init__(self, real: bool, data_dir: str, workers: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sip_calls", "--serve", "--data-dir", data_dir, "--workers", str(workers)]
            + (["--real"] if real else []),
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        info = self._read_json()
        self.port, self.pids = info["port"], info["pids"]

    def _read_json(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the gateway process ended")
            if line.startswith("{"):
                return json.loads(line)

    def cpu_seconds(self) -> float:
        """CPU of the gateway process and its SIP workers."""
        total = 0.0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def media_stats(self) -> list[dict[str, float]]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return self._read_json()["media"]

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def softphone(uri: str, *args: str, timeout: float = 180) -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "gateway.telephony.sip.softphone", uri, "--json", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def softphones(uri: str, calls: int, *args: str, timeout: float = 180) -> list[dict[str, Any]]:
    """``calls`` calls at once from as many softphone processes as their call tables need."""
    from gateway.telephony.sip.runtime import CALLS_PER_PROCESS

    cmd = [sys.executable, "-m", "gateway.telephony.sip.softphone", uri, "--json", *args]
    spread = [min(CALLS_PER_PROCESS, calls - k) for k in range(0, calls, CALLS_PER_PROCESS)]
    procs = [subprocess.Popen(cmd + ["--calls", str(k)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for k in spread]
    out: list[dict[str, Any]] = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=timeout)
        out += [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_latency(tmp: Path, calls: int, workers: int = 0) -> None:
    from gateway.config import load_settings
    from gateway.voice.audio import write_wav
    from gateway.voice.tts import Synthesizer

    settings = load_settings(overrides={"data_dir": str(tmp / "gw")})
    tts = Synthesizer(settings.voice.tts, cache_dir=tmp / "caller-voice")
    files = []
    for i, text in enumerate(TURNS):
        pcm = asyncio.run(tts.synthesize(text, 8000))
        path = tmp / f"turn{i}.wav"
        write_wav(path, pcm, 8000)
        files += ["--play", str(path)]
    gw = Gateway(real=True, data_dir=str(tmp / "gw"), workers=workers)
    latencies: list[float] = []
    try:
        for i in range(calls):
            results = softphone(f"sip:bot@127.0.0.1:{gw.port}", *files, "--quiet", "1.2", "--pause", "0.5",
                                "--seconds", "40")
            for r in results:
                got = [x for x in r["latencies"] if x is not None]
                latencies += got
                print(f"  call {i}: turn latencies {', '.join(f'{x * 1000:.0f} ms' for x in got) or '-'}"
                      f" (codec {r['codec']})")
    finally:
        gw.close()
    if latencies:
        where = f"{workers} SIP workers" if workers else "SIP in the gateway process"
        print(f"mouth-to-ear turn latency over SIP ({where}): n={len(latencies)} p50={pct(latencies, 0.5) * 1000:.0f} ms "
              f"p95={pct(latencies, 0.95) * 1000:.0f} ms (end-of-turn silence {settings.voice.endpoint.end_of_turn_ms} ms"
              " included)")
    else:
        print("mouth-to-ear turn latency: no reply measured")


def bench_concurrency(tmp: Path, steps: list[int], workers: int = 0) -> None:
    from gateway.voice.audio import write_wav

    t = np.arange(8000 * 4) / 8000
    tone = tmp / "tone.wav"
    write_wav(tone, (np.sin(2 * np.pi * 700 * t) * 9000).astype("<i2").tobytes(), 8000)
    seconds = 10.0
    for n in steps:
        gw = Gateway(real=False, data_dir=str(tmp / "gw-tone"), workers=workers)
        try:
            cpu0, t0 = gw.cpu_seconds(), time.monotonic()
            results = softphones(f"sip:bot@127.0.0.1:{gw.port}", n, "--play", str(tone),
                                 "--seconds", str(seconds), timeout=120)
            cpu = gw.cpu_seconds() - cpu0
            wall = time.monotonic() - t0
            media = gw.media_stats()
        finally:
            gw.close()
        answered = [r for r in results if r["answered"]]
        refused = sorted(f"{r['status']} {r['reason']}" for r in results if not r["answered"])
        gaps = sum(r["gaps"] for r in answered)
        heard = sum(r["voiced_rx"] for r in answered) * 0.02
        port_cpu = statistics.mean(m["media_cpu"] for m in media) * 100 if media else float("nan")
        underruns = sum(m["underruns"] for m in media)
        per_call = cpu / wall / max(len(answered), 1)
        if n == steps[-1] and per_call > 0:
            estimate = f"; CPU alone would allow about {1 / per_call:.0f} such calls per core"
        else:
            estimate = ""
        print(f"  {n} simultaneous call(s): answered {len(answered)}/{n}"
              f"{' (not answered: ' + ', '.join(refused) + ')' if refused else ''}, bot audio heard {heard:.1f} s, "
              f"gaps {gaps} frames, gateway underruns {underruns}; media port {port_cpu:.2f} % of a core per call; "
              f"gateway {'and workers ' if workers else 'process '}{per_call * 100:.1f} % of a core per call"
              f"{estimate}")


def bench_frame_access() -> None:
    import pjsua2 as pj

    from gateway.telephony.sip.media import FAST_FRAMES, read_frame, write_frame

    frame = pj.MediaFrame()
    pcm = bytes(range(256)) * 2 + bytes(128)
    frame.buf = pj.ByteVector(pcm)
    n = 300
    t0 = time.perf_counter()
    for _ in range(n):
        bytes(frame.buf)
    slow = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n * 10):
        read_frame(frame)
    fast = (time.perf_counter() - t0) / (n * 10)
    t0 = time.perf_counter()
    for _ in range(n * 10):
        write_frame(frame, pcm)
    wfast = (time.perf_counter() - t0) / (n * 10)
    t0 = time.perf_counter()
    for _ in range(n):
        frame.buf = pj.ByteVector(pcm)
    wslow = (time.perf_counter() - t0) / n
    import asyncio as _asyncio

    from gateway.telephony.sip.media import CallAudioPort, FrameBuffers, FrameSink

    loop = _asyncio.new_event_loop()
    buffers = FrameBuffers("bench", 8000)
    buffers.consumer = lambda pcm: None
    from gateway.telephony.sip.runtime import _quietly

    port = _quietly(lambda: CallAudioPort(buffers, FrameSink(loop)))  # no endpoint: pjsua2 complains
    small = pj.MediaFrame()
    write_frame(small, bytes(320))
    t0 = time.thread_time()
    for _ in range(n * 10):
        port.onFrameReceived(small)
        buffers.outgoing.append(bytes(320))
        port.onFrameRequested(small)
    per_pair = (time.thread_time() - t0) / (n * 10)
    holder = [port]
    del port
    _quietly(holder.clear)
    loop.close()
    print(f"port callbacks, tight loop: {per_pair * 1e6:.0f} us CPU per 20 ms (received + requested) = "
          f"{per_pair / 0.02 * 100:.2f} % of a core per call")
    print(f"frame.buf (640 bytes): read bytes(buf) {slow * 1e6:.0f} us vs data pointer {fast * 1e6:.1f} us; "
          f"write ByteVector(pcm) {wslow * 1e6:.1f} us vs resize+memmove {wfast * 1e6:.1f} us "
          f"(fast path {'on' if FAST_FRAMES else 'OFF'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sip_calls")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--real", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=2, help="calls for the latency figure (2 turns each)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--workers", type=int, default=4, help="SIP worker processes for the one-node figures")
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.real, args.data_dir, args.workers))
        return 0
    from gateway.telephony.sip.runtime import CALLS_PER_PROCESS

    try:
        bench_frame_access()
        with tempfile.TemporaryDirectory(prefix="sip-bench-") as tmp:
            print(f"simultaneous SIP calls, one gateway process (the pjsua2 wheel holds {CALLS_PER_PROCESS}):")
            bench_concurrency(Path(tmp), list(range(1, CALLS_PER_PROCESS + 1)))
            if args.workers:
                print(f"simultaneous SIP calls, one gateway node with {args.workers} SIP workers "
                      f"(callers: {CALLS_PER_PROCESS} calls per softphone process, on the same cores):")
                bench_concurrency(Path(tmp), list(range(CALLS_PER_PROCESS, args.workers * CALLS_PER_PROCESS + 1,
                                                        CALLS_PER_PROCESS)), args.workers)
            if not args.skip_latency:
                print("turn latency through the real core and voice pipeline:")
                bench_latency(Path(tmp), args.calls)
                if args.workers:
                    bench_latency(Path(tmp), args.calls, workers=2)
    except Exception:  # noqa: BLE001 - a bench reports, it never fails the run
        import traceback

        print("bench interrupted:")
        traceback.print_exc(file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
