"""SIP leg figures: mouth-to-ear turn latency of whole journeys at 1-24 calls, tone calls, media CPU.

    .venv/bin/python -m bench.sip_calls [--steps 1 4 8 16 24] [--arrival lockstep staggered] [--skip-tone]
                                        [--workers 4]

Everything runs on loopback with real SIP and RTP: the gateway's SIP channel in one process (or
with ``sip.workers``: the gateway process and its SIP worker processes behind the SIP front), the
softphone (pjsua2, its own endpoint; 4 calls per process) in others, all on the same cores.

1. Journeys (real core, real recognizers and synthesizer): N simultaneous calls, placed at once
   (lockstep: every call's turns at the same moment) and one by one over 20 s (``ARRIVALS``;
   ``--arrival``), each its own caller (distinct caller IDs; one in four is a known customer's
   number, greeted by name and asked for proof before any account data, and every call says that
   customer's order number). Every call walks the order-status journey with speech from the speech
   corpus (three voices, telephone band, the line's hiss under and between the words): an open
   question, a spoken digit string, two yes/no answers. The softphone waits for each prompt to end
   and measures mouth-to-ear: from its last voiced frame sent to the first voiced frame of the
   reply received (endpointing, recognition, the journey, synthesis, both jitter buffers). The
   gateway reports every turn's stage split (``TurnTimer.stages``), including the time each turn
   waited for a recognizer; premature cut-ins and barge-ins are counted. Printed per load: p50/p95
   mouth-to-ear by turn kind, the stage split, late frames (gateway underruns), CPU, memory of
   every process of the gateway (SIP workers and recognizer workers included) and the load average
   of the machine.
2. Tone calls (stubbed pipeline, measures the SIP media path only): 1..4 calls at once on one
   process, then 4, 8, ... on one node with workers; per call the caller counts silent frames
   inside the tone (gaps) and the gateway counts underruns.
3. Media-path CPU: time inside the call's AudioMediaPort callbacks per second of call.
4. ``frame.buf`` access: the slow SWIG path against the data-pointer copy the port uses.

Prints figures; never fails. Targets: mouth-to-ear p50 <= 700 ms and p95 <= 900 ms at
1 call, p95 <= 1.2 s at 4 and 16 calls.
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

from bench._common import KNOWN_CUSTOMERS, LINE_NOISE_DBFS, MemoryPeak

ROOT = Path(__file__).resolve().parent.parent
JOURNEY = (("open", "I want to check the status of my order"), ("digits", "one, zero, zero, zero, one"),
           ("yesno", "no thank you"), ("yesno", "no thank you"))
"""What every bench caller says, one turn after each prompt: the order-status journey."""
KNOWN_CALLERS = KNOWN_CUSTOMERS
"""The first call of each of the first four softphone processes is one of them, and every call of
a process says that customer's order number (any caller may ask about an order)."""
VOICES = ("heart", "heart-low", "heart-high")
"""Hiss on the caller's line between words (a quiet analogue line; digital silence flatters a VAD)."""


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


def _stages(timer: Any) -> dict[str, float | None]:
    """A turn's stage split (a gateway from before the split: what its ``as_dict`` had)."""
    if hasattr(timer, "stages"):
        return timer.stages()
    t = timer.as_dict()
    return {"endpoint": t["endpoint_wait"], "recognition": t["recognition"], "queue": t["queue"],
            "dialog": t["dialog"], "tts": t["tts"], "total": t["total"]}


def _marks(timer: Any) -> dict[str, float | None]:
    if hasattr(timer, "wall_marks"):
        return timer.wall_marks()
    return {"speech_end": None, "decided": None, "first_frame": None}


async def _serve(real: bool, data_dir: str, workers: int) -> None:
    from gateway.config import load_settings
    from gateway.telephony.sip.channel import start_sip_channel

    settings = load_settings(overrides={"data_dir": data_dir, "voice": {"max_calls": 100_000},  # measured, not capped
                                        "sip": {"enabled": True, "port": 0, "workers": workers, "max_calls": 64}})
    core: Any = None
    pipeline: Any = _TonePipeline()
    if real:
        from gateway.app import build_core
        from gateway.voice.pipeline import VoicePipeline

        core = await build_core(settings)
        pipeline = VoicePipeline(settings, core)
        await pipeline.start()
    finished: list[dict[str, Any]] = []
    if real:
        forget = pipeline._forget

        def keep_turns(session: Any) -> None:  # every ended call's turns, for the "turns" command
            finished.append({"caller_id": session.caller_id, "premature": getattr(session, "premature_cutins", 0),
                             "barge_ins": list(session.barge_ins),
                             "turns": [{"kind": t.kind, "expect": t.expect_kind, "early": getattr(t, "early", ""),
                                        "premature": getattr(t, "premature", False), "speculative": t.speculative,
                                        "stages": _stages(t), "marks": _marks(t)} for t in session.turns]})
            forget(session)

        pipeline._forget = keep_turns
    channel = await start_sip_channel(settings, core, pipeline)
    pids = [os.getpid()] + [w["pid"] for w in (await channel.stats()).get("workers", [])]
    if real:
        pids += pipeline.asr.worker_pids()
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
        elif line.strip() == b"turns":
            print(json.dumps({"calls": finished}), flush=True)
            finished = []
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

    def turns(self) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("turns\n")
        self.proc.stdin.flush()
        return self._read_json()["calls"]

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


def loadavg() -> str:
    """The machine's load average (1, 5, 15 minutes): what else ran while this figure was taken."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def journey_files(tmp: Path) -> dict[tuple[str, str], list[str]]:
    """``--play`` arguments per voice and order number: the journey's turns as corpus speech (clean:
    the softphone adds the line's hiss, ``LINE_NOISE_DBFS``, as it sends), the digits turn saying
    that order number."""
    from gateway.voice.audio import write_wav
    from tests.voice.speech_corpus import utterance

    files: dict[tuple[str, str], list[str]] = {}
    for v, voice in enumerate(VOICES):
        for o, (_number, order) in enumerate(KNOWN_CALLERS):
            args: list[str] = []
            for k, (kind, text) in enumerate(JOURNEY):
                text = order if kind == "digits" else text
                u = utterance(text, voice=voice, snr_db=None, lead_s=0.2, trail_s=0.2, seed=100 * v + k)
                path = tmp / f"journey-{voice}-{o}-{k}.wav"
                write_wav(path, u.pcm, u.rate)
                args += ["--play", str(path)]
            files[(voice, order)] = args
    return files


def _caller_ids(known: str, first: int, count: int) -> str:
    """Distinct caller IDs for ``count`` calls from index ``first``, the first of them ``known``
    (when given)."""
    unknown = [f"+1555031{i:04d}" for i in range(first, first + count)]
    return ",".join([known] + unknown[1:] if known else unknown)


def _journey_callers(uri: str, calls: int, files: dict[tuple[str, str], list[str]],
                     seconds: float, spread: float = 0.0) -> list[dict[str, Any]]:
    """Every call's summary; ``spread``: the calls are placed one by one over this many seconds
    (0: at once, lockstep). Call ``i`` of softphone process ``n`` is the ``i * processes + n``-th
    placed, so the processes interleave."""
    from gateway.telephony.sip.runtime import CALLS_PER_PROCESS

    procs = []
    processes = -(-calls // CALLS_PER_PROCESS)
    gap = spread / calls
    for n, first in enumerate(range(0, calls, CALLS_PER_PROCESS)):
        k = min(CALLS_PER_PROCESS, calls - first)
        known, order = KNOWN_CALLERS[n % len(KNOWN_CALLERS)]
        known = known if n < len(KNOWN_CALLERS) else ""  # one call per customer at a time
        cmd = [sys.executable, "-m", "gateway.telephony.sip.softphone", uri, "--json", "--calls", str(k),
               "--caller-id", _caller_ids(known, first, k), *files[(VOICES[n % len(VOICES)], order)],
               "--quiet", "0.8",
               "--pause", "0.3", "--seconds", str(seconds), "--line-noise", str(LINE_NOISE_DBFS),
               "--stagger", str(gap * processes)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        time.sleep(gap or 0.2)  # lockstep calls still arrive over a second, not in the same millisecond
    out: list[dict[str, Any]] = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=seconds + spread + 120)
        out += [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return out


def _number(caller_id: str | None) -> str:
    """A caller ID's digits (the gateway and the softphone may write it differently)."""
    return "".join(ch for ch in caller_id or "" if ch.isdigit())


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"p50 {pct(values, 0.5) * 1000:.0f} p95 {pct(values, 0.95) * 1000:.0f} ms (n={len(values)})"


def _path_delays(answered: list[dict[str, Any]],
                 calls: list[dict[str, Any]]) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """Per turn, matched by time among the same caller's turns (each call has its own caller ID):
    the caller's last word -> the gateway's speech end (RTP, jitter buffers, the bridge, the
    loop), the gateway's first reply frame -> the caller's reply onset, and mouth-to-ear by what
    the gateway expected at that turn (a misheard order number sends the journey back to the
    digits question, so the caller's script is not the turn's kind). Matched across calls, as
    this did before, lockstep calls' turns paired with other calls' and the reply path read up
    to 1 s."""
    gateway: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for c in calls:
        gateway.setdefault(_number(c["caller_id"]), []).extend(
            (t["marks"], t["expect"]) for t in c["turns"] if t["kind"] != "dtmf" and t["marks"]["speech_end"])
    ins: list[float] = []
    outs: list[float] = []
    by_expect: dict[str, list[float]] = {}
    for r in answered:
        mine = gateway.get(_number(r["caller_id"]), [])
        for last_word, onset in r.get("marks", []):
            if not last_word or not onset:
                continue
            near = [(g, e) for g, e in mine if 0 <= g["speech_end"] - last_word < 1.0 and g["first_frame"]
                    and 0 <= onset - g["first_frame"] < 1.0]
            if near:
                g, expect = min(near, key=lambda ge: ge[0]["speech_end"] - last_word)
                ins.append(g["speech_end"] - last_word)
                outs.append(onset - g["first_frame"])
                by_expect.setdefault(expect, []).append(onset - last_word)
    return ins, outs, by_expect


ARRIVALS = {"lockstep": 0.0, "staggered": 20.0}
"""How the calls of a load are placed: all at once, so that every call's turns come at the same
moment (the worst case: 16 callers finish the open question within a second), or one by one over
20 s (about one journey), so that turns come at independent moments, as real callers' do; the
calls are simultaneous either way once placed (each stays 75 s)."""


def bench_journeys(tmp: Path, steps: list[int], arrivals: list[str]) -> None:
    files = journey_files(tmp)
    seconds = 75.0
    for n, arrival in [(n, a) for n in steps for a in (arrivals if n > 1 else arrivals[:1])]:
        spread = ARRIVALS[arrival] if n > 1 else 0.0
        workers = 0 if n <= 4 else -(-n // 4)
        load_before = loadavg()
        gw = Gateway(real=True, data_dir=str(tmp / f"gw-journeys-{n}-{arrival}"), workers=workers)
        try:
            cpu0, t0 = gw.cpu_seconds(), time.monotonic()
            with MemoryPeak(gw.pids) as memory:  # the gateway process, its SIP and recognizer workers
                results = _journey_callers(f"sip:bot@127.0.0.1:{gw.port}", n, files, seconds, spread)
            cpu, wall = gw.cpu_seconds() - cpu0, time.monotonic() - t0
            time.sleep(1.0)
            media = gw.media_stats()
            calls = gw.turns()
        finally:
            gw.close()
        answered = [r for r in results if r["answered"]]
        by_kind: dict[str, list[float]] = {}
        for r in answered:
            for (kind, _text), latency in zip(JOURNEY, r["latencies"]):
                if latency is not None:
                    by_kind.setdefault(kind, []).append(latency)
        every = [x for v in by_kind.values() for x in v]
        turns = [t for c in calls for t in c["turns"] if t["kind"] != "dtmf"]
        placed = f"placed one every {spread / n:.2f} s over {spread:.0f} s" if spread else "placed at once (lockstep)"
        print(f"  {n} call(s) {placed} ({workers or 'no'} SIP workers), load average before {load_before}, "
              f"after {loadavg()}:")
        print(f"    answered {len(answered)}/{n}, caller IDs distinct: {len({r['caller_id'] for r in results}) == n}")
        ins, outs, by_expect = _path_delays(answered, calls)
        print(f"    mouth-to-ear, all turns: {_ms(every)}")
        for kind, values in by_expect.items():
            print(f"      {kind:<6} {_ms(values)} (what the gateway asked for; turns matched by time)")
        said = {kind: len(v) for kind, v in by_kind.items()}
        asked = {kind: len(v) for kind, v in by_expect.items()}
        print(f"    turns by what the callers said {said}, by what the gateway asked {asked} "
              "(a misheard digit string asks for it again)")
        for kind in ("open", "closed"):
            sel = [t for t in turns if t["kind"] == kind]
            if not sel:
                continue
            split = ", ".join(f"{stage} {pct([t['stages'][stage] for t in sel if t['stages'][stage] is not None] or [0], 0.5) * 1000:.0f}"
                              f"/{pct([t['stages'][stage] for t in sel if t['stages'][stage] is not None] or [0], 0.95) * 1000:.0f}"
                              for stage in sel[0]["stages"])
            early = sum(1 for t in sel if t.get("early"))
            print(f"    gateway stages, {kind} turns (p50/p95 ms): {split}; ended early {early}/{len(sel)}, "
                  f"speculative result used {sum(1 for t in sel if t['speculative'])}/{len(sel)}")
        print(f"    path outside the gateway's stages (perf_counter is one clock for every process here): "
              f"caller's last voiced frame -> the gateway has it {_ms(ins)}; first reply frame taken -> "
              f"the caller hears it {_ms(outs)}")
        premature = sum(c.get("premature", 0) for c in calls)
        barges = [b for c in calls for b in c["barge_ins"]]
        underruns = sum(m["underruns"] for m in media)
        print(f"    premature cut-ins {premature}, barge-ins {len(barges)} (backchannels {sum(1 for b in barges if b.get('backchannel'))}); "
              f"gateway underruns {underruns} frames; CPU {cpu / wall * 100:.0f} % of one core (2 cores); "
              f"memory of the gateway's processes at most {memory.rss:.0f} MB RSS summed, {memory.pss:.0f} MB PSS "
              "(shared pages counted once)")


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
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4, 8, 16, 24],
                        help="simultaneous journey calls per load")
    parser.add_argument("--arrival", nargs="+", choices=sorted(ARRIVALS), default=["lockstep", "staggered"],
                        help="how each load's calls are placed (both by default; one call is always alone)")
    parser.add_argument("--skip-latency", action="store_true", help="no journey calls")
    parser.add_argument("--skip-tone", action="store_true", help="no tone calls")
    parser.add_argument("--workers", type=int, default=4, help="SIP worker processes for the one-node figures")
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.real, args.data_dir, args.workers))
        return 0
    from gateway.telephony.sip.runtime import CALLS_PER_PROCESS

    try:
        print(f"load average at start: {loadavg()} (2 cores)")
        with tempfile.TemporaryDirectory(prefix="sip-bench-") as tmp:
            if not args.skip_latency:
                print("journeys through the real core and voice pipeline (real recognizers and synthesizer, "
                      "corpus speech with line noise, each call its own caller):")
                bench_journeys(Path(tmp), args.steps, args.arrival)
            if not args.skip_tone:
                bench_frame_access()
                print(f"tone calls (stubbed pipeline: the SIP media path only), one gateway process "
                      f"(the pjsua2 wheel holds {CALLS_PER_PROCESS}):")
                bench_concurrency(Path(tmp), list(range(1, CALLS_PER_PROCESS + 1)))
                if args.workers:
                    print(f"tone calls, one gateway node with {args.workers} SIP workers "
                          f"(callers: {CALLS_PER_PROCESS} calls per softphone process, on the same cores):")
                    bench_concurrency(Path(tmp), list(range(CALLS_PER_PROCESS, args.workers * CALLS_PER_PROCESS + 1,
                                                            CALLS_PER_PROCESS)), args.workers)
        print(f"load average at the end: {loadavg()}")
    except Exception:  # noqa: BLE001 - a bench reports, it never fails the run
        import traceback

        print("bench interrupted:")
        traceback.print_exc(file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
