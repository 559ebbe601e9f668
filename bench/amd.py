"""Answering-machine detection: how often and how fast people and voicemail are told apart.

    .venv/bin/python -m bench.amd [--rate 8000] [--vad silero|webrtc] [--bias 0]

The corpus (tests/voice/amd_corpus.py, 120 answered calls: 60 people, 60 voicemail greetings,
51 of them with a beep of 440-2000 Hz) is **synthesized speech** (hibari and espeak voices and
pitch-shifted variants), band-limited to the telephone band, with line noise under everything
and through G.711 mu-law. Real carriers' greetings differ: check yours with `voicegw amd`.

Printed: precision and recall for "machine" (what the call acts on: ``unknown`` counts as a
person unless ``--bias`` leans to machines), people misjudged, unknown verdicts, time to verdict
(median and p95, from the answer), the beep's end found within 100 ms, and the detector's CPU per
second of call audio (the VAD included), with the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from gateway.voice.amd import AmdConfig, Verdict, detect
from gateway.voice.vad import SileroVad, WebRtcVad
from tests.voice.amd_corpus import corpus


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=8000, choices=(8000, 16000))
    parser.add_argument("--vad", choices=("silero", "webrtc"), default="silero")
    parser.add_argument("--bias", type=float, default=0.0)
    args = parser.parse_args()
    clips = corpus(rate=args.rate)  # synthesized (and cached) before the clock starts
    config = AmdConfig(bias=args.bias)
    tp = fp = fn = tn = unknown = 0
    times: dict[str, list[float]] = {"human": [], "machine": []}
    beeps = beeps_found = 0
    audio_seconds = cpu = 0.0
    wrong: list[str] = []
    for clip in clips:
        vad = SileroVad(args.rate) if args.vad == "silero" else WebRtcVad(args.rate)
        start = time.process_time()
        found = detect(clip.pcm, clip.rate, lambda frame: vad.is_speech(frame) >= 0.5, config)
        cpu += time.process_time() - start
        vad.close()
        v = found.verdict
        audio_seconds += found.beep_ended_at or v.at_seconds
        machine = v.is_machine(config.bias)
        unknown += v.verdict is Verdict.UNKNOWN
        times[clip.truth].append(v.at_seconds)
        if clip.truth == "machine":
            tp, fn = tp + machine, fn + (not machine)
        else:
            fp, tn = fp + machine, tn + (not machine)
        if machine != (clip.truth == "machine"):
            wrong.append(f"{clip.name}: {v.verdict.value} after {v.at_seconds:.2f} s ({v.reason})")
        if clip.beep_end_s is not None:
            beeps += 1
            beeps_found += found.beep_ended_at is not None and abs(found.beep_ended_at - clip.beep_end_s) <= 0.1
    everything = times["human"] + times["machine"]
    print(f"answering-machine detection, {len(clips)} synthesized answered calls "
          f"({len(times['human'])} people, {len(times['machine'])} voicemail), {args.rate} Hz, "
          f"{args.vad} VAD, bias {args.bias:+.1f}; load average {os.getloadavg()[0]:.2f}")
    print(f"  machine precision {tp / max(1, tp + fp):.1%}  recall {tp / max(1, tp + fn):.1%}  "
          f"(people judged machines: {fp} of {fp + tn}; unknown verdicts: {unknown}, acted on as people)")
    print(f"  time to verdict: median {statistics.median(everything):.2f} s, p95 {_p95(everything):.2f} s "
          f"(people {statistics.median(times['human']):.2f}/{_p95(times['human']):.2f} s, "
          f"machines {statistics.median(times['machine']):.2f}/{_p95(times['machine']):.2f} s)")
    print(f"  beep end found within 100 ms: {beeps_found} of {beeps}")
    print(f"  CPU: {1000 * cpu / max(audio_seconds, 1e-9):.1f} ms per second of call audio (VAD included)")
    for line in wrong:
        print(f"  wrong: {line}")


if __name__ == "__main__":
    main()
