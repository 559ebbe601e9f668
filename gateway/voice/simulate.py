"""``voicegw simulate caller.wav``: a whole call through ``VoiceSession`` without a network.

The caller's recording is fed to a session in 20 ms ticks, exactly as a connector would, and the
bot's frames are pulled back at the same ticks. By default the clock is virtual: ticks run as
fast as the machine allows, and while the session is working (recognizing, asking the core,
synthesizing) with nothing to play, the clock waits for it, so the call sounds as it would with
an instant machine while the latencies printed are the real ones. ``--realtime`` ticks every
20 ms of wall time instead.

A recording may hold several caller turns separated by silence (a second or more). The
simulated caller behaves like a polite one: each turn is spoken after the bot has finished its
prompt (``--no-wait`` feeds the recording as it is, so the caller may talk over the bot).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gateway.voice.audio import frame_bytes as frame_size
from gateway.voice.endpoint import TurnState
from gateway.voice.session import VoiceSession
from gateway.voice.timing import format_stages

TURN_GAP_SECONDS = 1.0
"""Silence in the caller's recording that separates two turns."""
SETTLE_SECONDS = 1.0
"""Silence fed after the caller's last turn once the bot has answered, before hanging up."""
MAX_EXTRA_SECONDS = 600.0
"""Longest simulated time beyond the recording (a call that never ends is cut here)."""


class SimulatedControl:
    """Call control without a PBX: transfers succeed and are recorded, hangups are recorded."""

    def __init__(self) -> None:
        self.transfers: list[dict[str, Any]] = []
        self.hangups: list[str] = []

    async def transfer(self, conversation_id: str, action: Any) -> bool:
        self.transfers.append({"conversation_id": conversation_id, "queue": action.queue,
                               "skills": list(action.skills), "reason": action.reason})
        return True

    async def hangup(self, reason: str) -> None:
        self.hangups.append(reason)


def split_turns(pcm: bytes, rate: int, gap_seconds: float = TURN_GAP_SECONDS) -> list[bytes]:
    """Cut a recording at silences of ``gap_seconds`` or more (energy against the noise floor).

    Each piece keeps half of the silence before and after it, so the endpointer sees the same
    lead-in and tail it would on a live line.
    """
    fb = frame_size(rate)
    n = len(pcm) // fb
    if n == 0:
        return []
    x = np.frombuffer(pcm[: n * fb], dtype="<i2").astype(np.float32).reshape(n, fb // 2)
    rms = np.sqrt(np.mean(x * x, axis=1))
    floor = float(np.percentile(rms, 10))
    threshold = max(floor * 3.0, float(rms.max()) * 0.02, 30.0)
    active = rms > threshold
    gap = int(gap_seconds * 50)
    runs: list[list[int]] = []
    for i in np.nonzero(active)[0]:
        if runs and i - runs[-1][1] <= gap:
            runs[-1][1] = i
        else:
            runs.append([int(i), int(i)])
    if not runs:
        return [pcm]
    pieces: list[bytes] = []
    bounds = [0] + [(runs[k][1] + runs[k + 1][0]) // 2 for k in range(len(runs) - 1)] + [n]
    for k in range(len(runs)):
        pieces.append(pcm[bounds[k] * fb : bounds[k + 1] * fb])
    pieces[-1] += pcm[n * fb :]
    return pieces


class CallDriver:
    """Ticks a session: one caller frame in, one bot frame out, per 20 ms of (virtual) time."""

    def __init__(self, session: VoiceSession, *, realtime: bool = False):
        self.session = session
        self.realtime = realtime
        self.bot_audio = bytearray()
        self.ticks = 0
        self.max_late = 0.0
        self._t0 = 0.0
        self._silence = bytes(session.frame_bytes)

    async def tick(self, frame: bytes | None = None) -> None:
        s = self.session
        if self.realtime:
            if self.ticks == 0:
                self._t0 = time.perf_counter()
            due = self._t0 + self.ticks * 0.02
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.max_late = max(self.max_late, -delay)
        self.ticks += 1
        s.push_audio(frame if frame is not None else self._silence)
        self.bot_audio += s.pull_frame()
        if not self.realtime:
            await asyncio.sleep(0)
            while s.busy and (not s.playback.has_audio or s.deciding) and not s.ended.is_set():
                await s.wait_progress(timeout=5.0)

    @property
    def waiting_for_caller(self) -> bool:
        s = self.session
        return not s.busy and not s.playback.talking and s.endpointer.state in (TurnState.IDLE, TurnState.DRAIN)

    async def feed(self, pcm: bytes) -> None:
        fb = self.session.frame_bytes
        for i in range(0, len(pcm) - fb + 1, fb):
            if self.session.ended.is_set():
                return
            await self.tick(pcm[i : i + fb])

    async def wait_for_bot(self, limit_seconds: float) -> None:
        """Feed silence until the bot waits for the caller (or the call ends)."""
        for _ in range(int(limit_seconds * 50)):
            if self.session.ended.is_set() or self.waiting_for_caller:
                return
            await self.tick()


async def run_call(
    session: VoiceSession,
    caller_pcm: bytes,
    *,
    realtime: bool = False,
    wait: bool = True,
    settle_seconds: float = SETTLE_SECONDS,
    max_extra_seconds: float = MAX_EXTRA_SECONDS,
) -> CallDriver:
    """Play ``caller_pcm`` into a started session; returns the driver (bot audio, ticks)."""
    driver = CallDriver(session, realtime=realtime)
    turns = split_turns(caller_pcm, session.sample_rate) if wait else [caller_pcm]
    for piece in turns:
        if wait:
            await driver.wait_for_bot(max_extra_seconds)
        await driver.feed(piece)
        if session.ended.is_set():
            break
    await driver.wait_for_bot(max_extra_seconds)
    for _ in range(int(settle_seconds * 50)):
        if session.ended.is_set():
            break
        await driver.tick()
    # Let a goodbye that is still queued play out.
    for _ in range(int(max_extra_seconds * 50)):
        if not session.playback.talking:
            break
        await driver.tick()
    return driver


async def simulate(args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    """Run one simulated call as the CLI describes; returns the report printed."""
    from gateway.app import build_core
    from gateway.voice.audio import read_wav, resample, write_wav
    from gateway.voice.pipeline import VoicePipeline

    pcm, rate = read_wav(args.caller)
    call_rate = args.rate or settings.voice.sample_rate
    if rate != call_rate:
        pcm = resample(pcm, rate, call_rate)
    core = await build_core(settings)
    pipeline = VoicePipeline(settings, core)
    await pipeline.start()
    try:
        control = SimulatedControl()
        session = pipeline.session(call_id="simulated-call", sample_rate=call_rate,
                                   caller_id=args.caller_id, dialed=args.dialed, control=control)
        if args.journey:
            session.journey = args.journey
        await session.start()
        driver = await run_call(session, pcm, realtime=args.realtime, wait=not args.no_wait)
        if not session.ended.is_set():
            await session.stop("caller hung up")
        else:
            await session.stop(session.end_reason or "hangup")
        if args.out:
            write_wav(args.out, bytes(driver.bot_audio), call_rate)
        return {
            "conversation_id": session.conversation_id,
            "transcript": [{"speaker": who, "text": text} for who, text in session.transcript],
            "end_reason": session.end_reason,
            "transfers": control.transfers,
            "simulated_seconds": round(driver.ticks * 0.02, 2),
            "turns": [{**t.as_dict(), "premature": t.premature, "stages": t.stages()} for t in session.turns],
            "premature_cutins": session.premature_cutins,
            "barge_ins": len(session.barge_ins),
            "bot_audio": args.out or "",
        }
    finally:
        await pipeline.close()
        closer = getattr(core, "close", None)
        if closer is not None:
            await closer()


def _command(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from

    settings = settings_from(args)
    if args.data_dir:
        settings = settings.model_copy(update={"data_dir": args.data_dir})
    elif not args.keep_data:
        settings = settings.model_copy(update={"data_dir": tempfile.mkdtemp(prefix="voicegw-sim-")})
    report = asyncio.run(simulate(args, settings))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for line in report["transcript"]:
            print(f"{line['speaker']:>6}: {line['text']}")
        for t in report["transfers"]:
            print(f"-- transferred to queue {t['queue']} ({t['reason']})")
        print(f"-- call ended: {report['end_reason'] or 'caller hung up'} after "
              f"{report['simulated_seconds']} s; {len(report['turns'])} caller turns")
        for t in report["turns"]:
            print(f"   turn {t['kind']:<6} {format_stages(t['stages'])}"
                  + (f" (ended early: {t['early']})" if t["early"] else "")
                  + (" (caller went on: cut too soon)" if t["premature"] else ""))
        if report["premature_cutins"]:
            print(f"-- {report['premature_cutins']} turn(s) ended while the caller had not finished")
        if report["bot_audio"]:
            print(f"bot audio written to {report['bot_audio']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``voicegw simulate``."""
    p = subparsers.add_parser("simulate", help="run a whole call from a caller recording, no network")
    p.add_argument("caller", type=Path, help="caller audio (WAV, any rate; several turns separated by silence)")
    p.add_argument("--journey", default="", help="journey to start (default: the configured one)")
    p.add_argument("--out", metavar="WAV", help="write the bot's side of the call here")
    p.add_argument("--json", action="store_true", help="print the transcript and timings as JSON")
    p.add_argument("--realtime", action="store_true", help="tick every 20 ms of wall time")
    p.add_argument("--no-wait", action="store_true", help="feed the recording as it is (caller may talk over the bot)")
    p.add_argument("--rate", type=int, choices=(8000, 16000), help="call rate (default: voice.sample_rate)")
    p.add_argument("--caller-id", default="+15550100", help="caller number presented to the core")
    p.add_argument("--dialed", default="", help="number the caller dialed")
    p.add_argument("--data-dir", help="data directory (default: a fresh temporary one)")
    p.add_argument("--keep-data", action="store_true", help="use the configured data directory")
    p.set_defaults(func=_command)


if __name__ == "__main__":  # pragma: no cover
    from gateway.cli import main

    sys.exit(main(["simulate", *sys.argv[1:]]))
