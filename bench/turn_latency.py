"""Turn latency: end of the caller's speech -> first reply frame, split by stage.

    .venv/bin/python -m bench.turn_latency [--turns 8] [--rate 8000]

Corpus: the test speech corpus (tests/voice/speech_corpus.py): hibari voices "heart",
"heart-low", "heart-high", telephone band 300-3400 Hz, G.711 mu-law, pink noise at 20 dB SNR,
8 kHz. Open turns speak the corpus's customer-service sentences (recognized by the open-speech
engine), closed turns answer a yes/no question (closed-set engine). The conversation core is a
scripted one that answers at once with a new prompt text every turn (so TTS is never a cache
hit); its dialog time is therefore near zero and the real core's cost is measured elsewhere.

The call runs on the virtual clock of ``gateway.voice.simulate`` (the clock waits while the
session works), so the figures are the machine's processing time. The endpoint wait is the
end-of-turn silence window (settings.voice.endpoint.end_of_turn_ms); the targets (500 ms p95
open, 150 ms p95 closed) are for what comes after it, printed as "after window".
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from typing import Any

from gateway.config import load_settings
from gateway.core.actions import Ask, Expect
from gateway.core.port import Opened
from gateway.voice.simulate import SimulatedControl

OPEN_PROMPT = "Thanks. Turn {n}: is there anything else I can help you with today?"
CLOSED_PROMPT = "Turn {n}. Did I get that right? Please say yes or no."


class AlternatingCore:
    """A ConversationPort that alternates open questions and yes/no questions."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)
        self.next_closed = True
        self.events: list[Any] = []

    def _ask(self) -> Ask:
        n = next(self.counter)
        closed, self.next_closed = self.next_closed, not self.next_closed
        if closed:
            return Ask(CLOSED_PROMPT.format(n=n), expect=Expect(kind="yesno"))
        return Ask(OPEN_PROMPT.format(n=n), expect=Expect(kind="open"))

    async def open(self, channel: str, **kw: Any) -> Opened:
        self.next_closed = True  # the greeting asks an open question; the next one is yes/no
        return Opened("bench-" + str(id(self)), False, [Ask("Welcome. How can I help you today?")])

    async def handle(self, conversation_id: str, event: Any, *, session_id: str = "") -> list[Any]:
        self.events.append(event)
        if type(event).__name__ in ("ChannelClosed", "Silence"):
            return []
        return [self._ask()]

    async def context(self, conversation_id: str) -> dict[str, Any]:
        return {}

    def register_sink(self, action_type: Any, sink: Any) -> None:
        return None


def caller_turns(count: int, rate: int, seed: int = 0) -> list[bytes]:
    """Open and yes/no utterances alternating, starting with an open one."""
    from tests.voice.speech_corpus import OPEN_SENTENCES, YES_NO, utterance

    voices = ("heart", "heart-low", "heart-high")
    out = []
    for k in range(count):
        voice = voices[(k + seed) % len(voices)]
        if k % 2 == 0:
            text = OPEN_SENTENCES[(k // 2 + seed) % len(OPEN_SENTENCES)]
        else:
            text = YES_NO[(k // 2 + seed) % len(YES_NO)][0]
        u = utterance(text, voice=voice, rate=rate, snr_db=20, noise_kind="pink",
                      lead_s=0.4, trail_s=1.2, seed=k + seed)
        out.append(u.pcm)
    return out


async def build_engines(settings: Any) -> tuple[Any, Any, str]:
    """The real recognizer and synthesizer; returns (asr, tts, note)."""
    from gateway.voice.tts import Synthesizer

    tts = Synthesizer(settings.voice.tts, cache_dir=settings.data_path("prompt-cache"))
    await tts.warm_up()
    try:
        from gateway.voice.asr import AsrRouter
    except ImportError as exc:
        raise SystemExit(f"the speech recognizer is not available ({exc}); nothing to measure") from exc
    asr = AsrRouter(settings.voice.asr, data_dir=settings.data_path(""))
    await asr.start()
    return asr, tts, "real AsrRouter"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def report(turns: list[dict[str, Any]], window_s: float) -> None:
    """Print p50/p95 per stage for open and closed turns."""
    for kind in ("open", "closed"):
        rows = [t for t in turns if t["kind"] == kind and t["total"] is not None]
        if not rows:
            print(f"{kind}: no turns")
            continue
        print(f"{kind} turns: {len(rows)} (engines: {', '.join(sorted({t['engine'] or '-' for t in rows}))})")
        for field in ("endpoint_wait", "recognition", "queue", "dialog", "tts", "total"):
            vals = [t[field] * 1000 for t in rows if t[field] is not None]
            print(f"  {field:<14} p50 {pct(vals, 0.5):7.0f} ms   p95 {pct(vals, 0.95):7.0f} ms")
        after = [(t["total"] - t["endpoint_wait"]) * 1000 for t in rows]
        target = 500 if kind == "open" else 150
        print(f"  {'after window':<14} p50 {pct(after, 0.5):7.0f} ms   p95 {pct(after, 0.95):7.0f} ms"
              f"   (target p95 {target} ms; window {window_s * 1000:.0f} ms)")
        texts = [t["text"] for t in rows[:4]]
        print(f"  recognized e.g.: {texts}")


async def main_async(args: argparse.Namespace) -> None:
    from gateway.voice.pipeline import VoicePipeline
    from gateway.voice.simulate import run_call

    data = tempfile.mkdtemp(prefix="voicegw-bench-")
    settings = load_settings(overrides={"data_dir": data})
    asr, tts, note = await build_engines(settings)
    core = AlternatingCore()
    pipeline = VoicePipeline(settings, core, asr=asr, tts=tts)
    await pipeline.start()
    pcm = b"".join(caller_turns(args.turns * 2, args.rate))
    t0 = time.perf_counter()
    session = pipeline.session(call_id="bench", sample_rate=args.rate, control=SimulatedControl())
    await session.start()
    driver = await run_call(session, pcm, realtime=args.realtime)
    wall = time.perf_counter() - t0
    await session.stop()
    turns = session.stats["turns"]
    mode = "real-time clock" if args.realtime else "virtual clock"
    spec = settings.voice.endpoint.speculative_ms
    print(f"turn latency at {args.rate} Hz, {mode}, speculative {spec or 'off'}"
          f"{' ms' if spec else ''}, {note}, TTS {tts.engine_name}; {len(turns)} turns, "
          f"{driver.ticks * 0.02:.0f} s of call simulated in {wall:.1f} s")
    report(turns, settings.voice.endpoint.end_of_turn_ms / 1000)
    await pipeline.close()
    await asr.close()
    await tts.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=8, help="turns of each kind (open, closed)")
    parser.add_argument("--rate", type=int, default=8000, choices=(8000, 16000))
    parser.add_argument("--realtime", action="store_true",
                        help="tick every 20 ms of wall time (needed to see speculative recognition pay off)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
