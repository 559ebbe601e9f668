"""``voicegw transcribe``, ``voicegw say`` and ``voicegw amd``: the speech engines from the command line.

    voicegw transcribe call1.wav call2.wav --json
    voicegw transcribe digits.wav --engine pocketsphinx --expect digits
    voicegw say "Thanks for calling." -o hello.wav --rate 8000
    voicegw amd greeting1.wav greeting2.wav      # human, machine or unknown, and how soon
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from gateway.core.actions import Expect
from gateway.voice.asr import AsrError, AsrRouter
from gateway.voice.audio import AudioFormatError, read_wav, resample, write_wav

CALL_RATES = (8000, 16000)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the speech subcommands to ``voicegw``."""
    p = subparsers.add_parser("transcribe", help="recognize speech in WAV files")
    p.add_argument("files", nargs="+", metavar="FILE", help="WAV files (any rate, channels, width)")
    p.add_argument("--json", action="store_true", help="print a JSON list with timings")
    p.add_argument("--engine", choices=("whisper", "pocketsphinx", "vosk"), help="recognizer (default: from settings)")
    p.add_argument("--expect", choices=("open", "digits", "yesno"), default="open",
                   help="what the audio holds: open speech, a digit string or a yes/no answer")
    p.set_defaults(func=transcribe_command)
    s = subparsers.add_parser("say", help="synthesize a prompt to a WAV file")
    s.add_argument("text", help="what to say")
    s.add_argument("-o", "--output", required=True, metavar="WAV", help="output file")
    s.add_argument("--rate", type=int, default=8000, choices=CALL_RATES, help="sample rate (default 8000)")
    s.set_defaults(func=say_command)
    a = subparsers.add_parser("amd", help="answering-machine detection on recorded greetings (WAV, 8 or 16 kHz)")
    a.add_argument("files", nargs="+", metavar="FILE", help="WAV recordings of answered calls, from the answer on")
    a.add_argument("--vad", choices=("silero", "webrtc"), default="silero", help="voice activity detector")
    a.add_argument("--bias", type=float, default=0.0, help="-1 (lean human) .. 1 (lean machine)")
    a.add_argument("--json", action="store_true", help="print a JSON list")
    a.set_defaults(func=amd_command)


def _settings(args: argparse.Namespace) -> Any:
    from gateway.cli import settings_from

    return settings_from(args)


def transcribe_command(args: argparse.Namespace) -> int:
    """Recognize each file; a bad file is reported and the others still processed."""
    settings = _settings(args)
    asr = settings.voice.asr
    expect = Expect(kind=args.expect)
    update: dict[str, Any] = {"workers": min(len(args.files), asr.workers or 2)}
    fallback = True
    if args.engine:
        if args.engine == "pocketsphinx" and not expect.closed:
            print("voicegw transcribe: pocketsphinx only recognizes closed sets: add --expect digits or --expect yesno",
                  file=sys.stderr)
            return 2
        update.update(open_engine=args.engine, closed_engine=args.engine)
        fallback = args.engine == "whisper"
    router = AsrRouter(asr.model_copy(update=update), data_dir=Path(settings.data_dir), fallback=fallback)
    return asyncio.run(_transcribe(router, args.files, expect, args.json))


async def _transcribe(router: AsrRouter, files: list[str], expect: Expect, as_json: bool) -> int:
    try:
        await router.start()
    except AsrError as exc:
        print(f"voicegw transcribe: {exc}", file=sys.stderr)
        return 1
    results: list[dict[str, Any]] = []
    failed = 0
    try:
        for name in files:
            try:
                pcm, rate = read_wav(name)
                if rate not in CALL_RATES:
                    pcm, rate = resample(pcm, rate, 16000), 16000
                t = await router.recognize(pcm, rate, expect)
            except (AudioFormatError, AsrError) as exc:
                failed += 1
                message = str(exc) if name in str(exc) else f"{name}: {exc}"
                print(f"voicegw transcribe: error: {message}", file=sys.stderr)
                results.append({"file": name, "error": str(exc)})
                continue
            results.append({
                "file": name, "text": t.text, "confidence": round(t.confidence, 3), "engine": t.engine,
                "audio_seconds": round(t.audio_seconds, 3), "decode_seconds": round(t.decode_seconds, 3),
            })
            if not as_json:
                print(f"{name}: {t.text}" if len(files) > 1 else t.text, flush=True)
    finally:
        await router.close()
    if as_json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def say_command(args: argparse.Namespace) -> int:
    """Synthesize ``text`` into a WAV file at the call rate."""
    from gateway.voice.tts import Synthesizer, TtsError

    settings = _settings(args)
    synth = Synthesizer(settings.voice.tts, cache_dir=settings.data_path(settings.voice.tts.cache_dir))
    try:
        pcm = synth.synthesize_sync(args.text, args.rate)
    except TtsError as exc:
        print(f"voicegw say: {exc}", file=sys.stderr)
        return 1
    if not pcm:
        print("voicegw say: nothing to say (empty text)", file=sys.stderr)
        return 2
    try:
        write_wav(args.output, pcm, args.rate)
    except (OSError, RuntimeError) as exc:
        print(f"voicegw say: cannot write {args.output}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {len(pcm) / 2 / args.rate:.2f} s at {args.rate} Hz ({synth.engine_name})")
    return 0


def amd_command(args: argparse.Namespace) -> int:
    """Print the verdict, the time to it and the beep for each recording (a bad file is reported)."""
    from gateway.voice.amd import AmdConfig, detect
    from gateway.voice.vad import SileroVad, WebRtcVad

    config = AmdConfig(bias=max(-1.0, min(1.0, args.bias)))
    rows: list[dict[str, Any]] = []
    failed = 0
    for name in args.files:
        try:
            pcm, rate = read_wav(name)
        except (OSError, AudioFormatError) as exc:
            print(f"{name}: cannot read: {exc}", file=sys.stderr)
            failed += 1
            continue
        if rate not in CALL_RATES:
            pcm, rate = resample(pcm, rate, 8000), 8000
        vad = SileroVad(rate) if args.vad == "silero" else WebRtcVad(rate)
        try:
            found = detect(pcm, rate, lambda frame: vad.is_speech(frame) >= 0.5, config)
        finally:
            vad.close()
        v = found.verdict
        rows.append({"file": name, "verdict": v.verdict.value, "acts_as": "machine" if v.is_machine(config.bias)
                     else "human", "seconds": v.at_seconds, "reason": v.reason,
                     "greeting_seconds": v.greeting_seconds, "beep_ended_at": found.beep_ended_at})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            beep = f", beep ended at {r['beep_ended_at']:.2f} s" if r["beep_ended_at"] is not None else ""
            print(f"{r['file']}: {r['verdict']} after {r['seconds']:.2f} s ({r['reason']}{beep})")
    return 1 if failed else 0
