"""Speech recognition on this machine, at 8 kHz: accuracy and cost per engine.

    .venv/bin/python -m bench.asr [--quick]
    .venv/bin/python -m bench.asr --cmn     # the streams' narrowband cepstral mean (stream_worker)

Corpus (synthesized, so words and boundaries are known): hibari voice "heart" and two
formant-shifted variants, 0.5 s of silence around each utterance, 300-3400 Hz telephone band,
G.711 mu-law, 8 kHz; a third of the open sentences clean, a third with white noise at 15 dB SNR,
a third with pink noise at 10 dB. Closed sets: digit strings and yes/no answers, same voices,
and order numbers as the order-status journey asks for them (a 5-8 digit grammar; said with and
without pauses between the digits, line noise at 30 dB SNR, as the journey benches' callers).

Prints WER, CPU and wall seconds per utterance, real-time factor and p50/p95 latency for:
Whisper with the padded 30 s encoder window vs the short window, Whisper batched decoding,
pocketsphinx on closed grammars (8 kHz resampled up, and 16 kHz wideband for reference), the
same grammars streamed (fed 100 ms at a time, as a call feeds ``ClosedStreams``), Whisper on the
same closed sets, and the router's pocketsphinx -> Whisper fallback and cross-check.

Then rejection: agent phrases and other out-of-grammar sentences (same voices and line) spoken at
a digits step (5-8 digits) and a yes/no step. "False accepts" are those the core takes as an
answer (``gateway.core.interpret``, what the dialog does with the transcript), printed beside the
in-grammar answers right, for the grammar alone and cross-checked by Whisper, with the
grammar's rejection (global phrases, garbage loop) and Whisper's out-of-grammar rule, and as
before them. Target: at most 2 % false accepts, in-grammar right no worse than before.
"""

from __future__ import annotations

import os

from gateway.voice.asr.base import WORKER_ENV

os.environ.update(WORKER_ENV)  # before numpy loads: the decoders run here as in the recognizer workers

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from gateway.config import AsrSettings
from gateway.core.actions import Expect
from gateway.voice import audio
from gateway.voice.asr.base import ENGINE_RATE, word_errors
from gateway.voice.asr.grammar import (answer_of, digit_bounds, plausible, prefer_open_engine, spoken_digits,
                                      yes_no_meaning)
from gateway.voice.asr.router import resolve_path
from gateway.voice.asr.sphinx import PocketsphinxEngine
from gateway.voice.asr.stream_worker import StreamDecoders
from gateway.voice.asr.whisper import WhisperDecoder
from tests.voice.speech_corpus import DIGIT_STRINGS, OPEN_SENTENCES, YES_NO, Utterance, utterance
from tests.voice.speech_corpus import VOICES as ALL_VOICES

VOICES = ("heart", "heart-low", "heart-high")
AGENT_PHRASES = ("I want to speak to an agent", "agent", "representative", "operator", "let me talk to a person",
                 "can I talk to a real person", "help", "repeat that", "go back")
OUT_OF_GRAMMAR = ("there is a wrong charge on my bill", "my package never arrived", "I don't know it",
                  "can you help me reset my password", "I need to change my delivery address", "hold on a second",
                  "what did you say", "I don't have it with me")
CONDITIONS = ((None, "white"), (15.0, "white"), (10.0, "pink"))


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _row(name: str, errors: int, words: int, walls: list[float], cpus: list[float], audio_s: list[float],
         extra: str = "") -> None:
    rtf = sum(walls) / max(sum(audio_s), 1e-9)
    print(f"  {name:<34} WER {errors / max(words, 1):6.3f}  wall/utt {statistics.mean(walls):6.3f} s  "
          f"cpu/utt {statistics.mean(cpus):6.3f} s  RTF {rtf:5.3f}  p50 {_pct(walls, 50):6.3f}  "
          f"p95 {_pct(walls, 95):6.3f}{extra}")


def open_corpus(quick: bool) -> list[Utterance]:
    sentences = OPEN_SENTENCES[:4] if quick else OPEN_SENTENCES[:8]
    out = []
    for i, text in enumerate(sentences):
        for j, voice in enumerate(VOICES[:2] if quick else VOICES):
            snr, kind = CONDITIONS[(i + j) % len(CONDITIONS)]
            out.append(utterance(text, voice=voice, snr_db=snr, noise_kind=kind, seed=i))
    return out


def closed_corpus(rate: int, telephone: bool) -> tuple[list[tuple[Utterance, str]], list[tuple[Utterance, str]]]:
    digits = [(utterance(t, voice=v, rate=rate, telephone=telephone, ulaw=telephone), d)
              for t, d in DIGIT_STRINGS for v in VOICES]
    yesno = [(utterance(t, voice=v, rate=rate, telephone=telephone, ulaw=telephone), a)
             for t, a in YES_NO for v in VOICES]
    return digits, yesno


def timed(fn, *args):  # type: ignore[no-untyped-def]
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - w0, time.process_time() - c0


def bench_whisper(decoder: WhisperDecoder, corpus: list[Utterance], window: float) -> dict[str, float]:
    errors = words = 0
    walls, cpus, secs = [], [], []
    for u in corpus:
        x = audio.pcm_to_float(audio.resample(u.pcm, u.rate, ENGINE_RATE))
        (res,), wall, cpu = timed(decoder.transcribe, [x], window)
        e, n = word_errors(u.text, res.text)
        errors, words = errors + e, words + n
        walls.append(wall)
        cpus.append(cpu)
        secs.append(len(u.pcm) / 2 / u.rate)
    _row(f"whisper window {window:.0f} s", errors, words, walls, cpus, secs)
    return {"wer": errors / max(words, 1), "p50": _pct(walls, 50), "p95": _pct(walls, 95)}


def bench_batch(decoder: WhisperDecoder, corpus: list[Utterance], size: int) -> None:
    xs = [audio.pcm_to_float(audio.resample(u.pcm, u.rate, ENGINE_RATE)) for u in corpus[: size * 3]]
    _r, seq_wall, seq_cpu = timed(lambda: [decoder.transcribe([x]) for x in xs])
    batches = [xs[i:i + size] for i in range(0, len(xs), size)]
    _r, batch_wall, batch_cpu = timed(lambda: [decoder.transcribe(b) for b in batches])
    print(f"  whisper batch of {size}: {len(xs)} utterances: batched {batch_wall:.2f} s wall / {batch_cpu:.2f} s cpu, "
          f"one by one {seq_wall:.2f} s wall / {seq_cpu:.2f} s cpu (cpu ratio {seq_cpu / batch_cpu:.2f}x)")


ORDER_NUMBERS = (("one, zero, zero, zero, one", "10001"), ("two zero zero zero one", "20001"),
                 ("four, zero, zero, zero, two", "40002"), ("six zero zero zero two", "60002"),
                 ("three, five, seven, one, nine, two", "357192"), ("eight one zero oh four four two", "8100442"))
"""Order numbers of the sample CRM's kind, as callers say them (commas: a pause between digits)."""


def expect_order(_d: str) -> Expect:
    return Expect(kind="digits", min_digits=5, max_digits=8)


def order_corpus() -> list[tuple[Utterance, str]]:
    return [(utterance(t, voice=v, rate=8000, snr_db=30.0), d) for t, d in ORDER_NUMBERS for v in VOICES]


def bench_closed(name: str, recognize, cases: list[tuple[Utterance, str]], expect_for, judge) -> list[str]:  # type: ignore[no-untyped-def]
    right = errors = words = 0
    walls, cpus, secs, texts = [], [], [], []
    for u, answer in cases:
        (text, _conf), wall, cpu = timed(recognize, u.pcm, u.rate, expect_for(answer))
        texts.append(text)
        right += judge(text, answer)
        e, n = word_errors(" ".join(answer) if answer.isdigit() else answer,
                           " ".join(spoken_digits(text)) if answer.isdigit() else yes_no_meaning(text))
        errors, words = errors + e, words + n
        walls.append(wall)
        cpus.append(cpu)
        secs.append(len(u.pcm) / 2 / u.rate)
    _row(name, errors, words, walls, cpus, secs, f"  right {right}/{len(cases)}")
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller corpus")
    parser.add_argument("--cmn", action="store_true", help="print the streams' narrowband cepstral mean and stop")
    args = parser.parse_args(argv)
    if args.cmn:
        return print_cmn()
    settings = AsrSettings()
    model_dir = resolve_path(settings.whisper_model_dir, None)
    corpus = open_corpus(args.quick)
    print("corpus: hibari TTS (heart + 2 formant-shifted variants), 8 kHz, 300-3400 Hz, mu-law; "
          f"open: {len(corpus)} utterances ({sum(len(u.pcm) for u in corpus) / 16000:.0f} s), "
          "1/3 clean, 1/3 white noise 15 dB, 1/3 pink noise 10 dB")
    decoder = WhisperDecoder(model_dir, threads=1, window_seconds=settings.whisper_window_seconds)
    decoder.transcribe([np.zeros(ENGINE_RATE, np.float32)])
    print("open speech, Whisper base int8, greedy, 1 thread (as in a 2-worker pool):")
    full = bench_whisper(decoder, corpus, 30.0)
    short = bench_whisper(decoder, corpus, settings.whisper_window_seconds)
    print(f"  -> short window: WER {short['wer']:.3f} vs {full['wer']:.3f}, p50 latency "
          f"{full['p50'] / max(short['p50'], 1e-9):.1f}x lower")
    bench_batch(decoder, corpus, 2)

    def expect_digits(d: str) -> Expect:
        return Expect(kind="digits", min_digits=len(d), max_digits=len(d))

    def expect_yesno(_a: str) -> Expect:
        return Expect(kind="yesno")

    def digits_right(text: str, d: str) -> bool:
        return spoken_digits(text) == d

    def yesno_right(text: str, a: str) -> bool:
        return yes_no_meaning(text) == a

    sphinx = PocketsphinxEngine()
    fallbacks: list[int] = []

    def ps(pcm: bytes, rate: int, expect: Expect) -> tuple[str, float]:
        t = sphinx.recognize(pcm, rate, expect)
        return t.text, t.confidence

    def wh(pcm: bytes, rate: int, expect: Expect) -> tuple[str, float]:
        # as the router asks: a digits question gets Whisper's digits prompt (whisper.HINTS)
        x = audio.pcm_to_float(audio.resample(pcm, rate, ENGINE_RATE))
        r = decoder.transcribe([x], hint="digits" if expect.kind == "digits" else "")[0]
        return r.text, r.confidence

    streams = StreamDecoders()
    sid = iter(range(1, 1_000_000))

    def streamed(pcm: bytes, rate: int, expect: Expect) -> tuple[str, float]:
        n = next(sid)
        streams.open(n, rate, expect)
        step = rate * 2 // 10
        for i in range(0, len(pcm), step):
            streams.audio(n, pcm[i:i + step])
        t = streams.end(n)
        return t.text, t.confidence

    def routed(pcm: bytes, rate: int, expect: Expect) -> tuple[str, float]:
        t = sphinx.recognize(pcm, rate, expect)
        if plausible(t.text, expect):
            return t.text, t.confidence
        fallbacks.append(1)
        return wh(pcm, rate, expect)

    digits8, yesno8 = closed_corpus(8000, True)
    digits16, yesno16 = closed_corpus(16000, False)
    print(f"closed sets: {len(digits8)} digit strings (3-8 digits) and {len(yesno8)} yes/no answers; "
          "'right' = the digit string / the yes-no meaning recovered exactly; WER here is over digits / the yes-no meaning")
    bench_closed("pocketsphinx digits 8k->16k", ps, digits8, expect_digits, digits_right)
    bench_closed("pocketsphinx digits 8k, any length", ps, digits8, lambda _d: Expect(kind="digits"), digits_right)
    bench_closed("pocketsphinx yes/no 8k->16k", ps, yesno8, expect_yesno, yesno_right)
    bench_closed("pocketsphinx stream digits 8k", streamed, digits8, expect_digits, digits_right)
    bench_closed("pocketsphinx stream yes/no 8k", streamed, yesno8, expect_yesno, yesno_right)
    print("  (stream rows: wall and cpu include feeding the whole utterance; a call feeds it while the caller "
          "speaks and waits only for the end, about 1 ms)")
    bench_closed("pocketsphinx digits 16k wideband", ps, digits16, expect_digits, digits_right)
    bench_closed("pocketsphinx yes/no 16k wideband", ps, yesno16, expect_yesno, yesno_right)
    bench_closed("whisper 10 s digits 8k", wh, digits8, expect_digits, digits_right)
    bench_closed("whisper 10 s yes/no 8k", wh, yesno8, expect_yesno, yesno_right)
    bench_closed("pocketsphinx->whisper digits 8k", routed, digits8, expect_digits, digits_right)
    bench_closed("pocketsphinx->whisper yes/no 8k", routed, yesno8, expect_yesno, yesno_right)
    print(f"  fallbacks to whisper: {len(fallbacks)} of {len(digits8) + len(yesno8)} closed-set answers")
    preferred: list[int] = []

    def cross_checked(pcm: bytes, rate: int, expect: Expect) -> tuple[str, float]:
        # What the router does with voice.asr.cross_check: both engines, Whisper's answer if it fits.
        closed = sphinx.recognize(pcm, rate, expect)
        text, conf = wh(pcm, rate, expect)
        if prefer_open_engine(closed.text, text, expect):
            preferred.append(answer_of(text, expect) != answer_of(closed.text, expect))
            return text, conf
        return closed.text, closed.confidence

    bench_closed("pocketsphinx+whisper digits 8k", cross_checked, digits8, expect_digits, digits_right)
    bench_closed("pocketsphinx+whisper yes/no 8k", cross_checked, yesno8, expect_yesno, yesno_right)

    def stream_checked(pcm: bytes, rate: int, expect: Expect) -> tuple[str, float]:
        closed_text, closed_conf = streamed(pcm, rate, expect)
        text, conf = wh(pcm, rate, expect)
        return (text, conf) if prefer_open_engine(closed_text, text, expect) else (closed_text, closed_conf)

    bench_closed("pocketsphinx stream+whisper digits 8k", stream_checked, digits8, expect_digits, digits_right)
    bench_closed("pocketsphinx stream+whisper yes/no 8k", stream_checked, yesno8, expect_yesno, yesno_right)
    orders = order_corpus()
    print(f"order numbers as the order-status journey asks for them (5 to 8 digits, said with and without "
          f"pauses between the digits): {len(orders)} utterances")
    bench_closed("pocketsphinx order numbers 8k", ps, orders, expect_order, digits_right)
    bench_closed("pocketsphinx stream order numbers 8k", streamed, orders, expect_order, digits_right)
    bench_closed("whisper 10 s order numbers 8k", wh, orders, expect_order, digits_right)
    bench_closed("pocketsphinx stream+whisper orders 8k", stream_checked, orders, expect_order, digits_right)
    print(f"  cross-check (cost: both engines, run at once by the router): whisper changed the grammar's "
          f"answer {sum(preferred)} times of {len(digits8) + len(yesno8)}")
    bench_rejection(sphinx, decoder, digits8, yesno8, args.quick)
    return 0


def print_cmn() -> int:
    """The mean cepstrum of whole telephone utterances (every voice of the speech corpus, its open
    sentences, 8 kHz mu-law through the noise floor): where a closed-set stream's live cepstral
    mean normalization starts (``stream_worker.NARROWBAND_CMN``)."""
    sphinx = PocketsphinxEngine()
    means = []
    for text in OPEN_SENTENCES:
        for voice in ALL_VOICES:
            u = utterance(text, voice=voice, rate=8000, telephone=True, ulaw=True)
            sphinx.recognize(u.pcm, u.rate, Expect(kind="yesno"))  # a whole-utterance decode: batch CMN
            means.append([float(v) for v in sphinx._decoder.get_cmn().split(",")])
    print(f"{len(means)} utterances; mean cepstrum:")
    print(",".join(f"{v:.2f}" for v in np.mean(means, axis=0)))
    return 0


def _prefer_before(closed_text: str, open_text: str, expect: Expect) -> bool:
    """``prefer_open_engine`` as it was before out-of-grammar speech was told apart (for comparison)."""
    closed_fits = plausible(closed_text, expect)
    if expect.kind == "digits":
        low, high = digit_bounds(expect)
        heard = spoken_digits(open_text)
        if not low <= len(heard) <= high:
            return not closed_fits
        words = closed_text.split()
        return not (closed_fits and "oh" in words and len(heard) < len(words))
    return bool(yes_no_meaning(open_text)) or not closed_fits


def bench_rejection(sphinx: PocketsphinxEngine, decoder: WhisperDecoder, digits8: list[tuple[Utterance, str]],
                    yesno8: list[tuple[Utterance, str]], quick: bool) -> None:
    """False accepts of out-of-grammar speech at closed steps, beside the in-grammar answers right."""
    from datetime import date

    from gateway.core.interpret import interpret
    from gateway.core.journeys import AskStep

    plain = PocketsphinxEngine(rejection=False)
    today = date(2026, 12, 6)
    steps = {"digits": (AskStep(id="o", ask="?", expect="digits", digits=(5, 8), slot="o"),
                        Expect(kind="digits", min_digits=5, max_digits=8)),
             "yesno": (AskStep(id="y", ask="?", expect="yesno", slot="y"), Expect(kind="yesno"))}
    voices = VOICES[:2] if quick else VOICES
    other = [utterance(t, voice=v) for t in AGENT_PHRASES + OUT_OF_GRAMMAR for v in voices]
    heard: dict[tuple[int, str], str] = {}

    def whisper(u: Utterance, hint: str) -> str:
        key = (id(u), hint)
        if key not in heard:
            x = audio.pcm_to_float(audio.resample(u.pcm, u.rate, ENGINE_RATE))
            heard[key] = decoder.transcribe([x], hint=hint)[0].text
        return heard[key]

    def answer(engine: PocketsphinxEngine, cross: bool, prefer, u: Utterance, expect: Expect) -> str:  # type: ignore[no-untyped-def]
        closed = engine.recognize(u.pcm, u.rate, expect).text
        if not cross:
            return closed
        # the hint as the router gives it; "before" (the rejection work) had no prompt either
        said = whisper(u, "digits" if expect.kind == "digits" and prefer is prefer_open_engine else "")
        return said if prefer(closed, said, expect) else closed

    setups = (("grammar alone, before", plain, False, _prefer_before),
              ("grammar alone, with rejection", sphinx, False, prefer_open_engine),
              ("grammar+whisper, before", plain, True, _prefer_before),
              ("grammar+whisper, with rejection", sphinx, True, prefer_open_engine))
    print(f"rejection: {len(other)} out-of-grammar utterances ({len(AGENT_PHRASES)} agent/help/repeat/go-back "
          f"phrases, {len(OUT_OF_GRAMMAR)} other sentences, {len(voices)} voices), each at a digits (5-8) and a "
          "yes/no step; false accept = the core takes it as an answer")
    for name, engine, cross, prefer in setups:
        fa = {"digits": 0, "yesno": 0}
        for u in other:
            for kind, (step, expect) in steps.items():
                fa[kind] += interpret(step, answer(engine, cross, prefer, u, expect), today=today) is not None
        right_d = sum(spoken_digits(answer(engine, cross, prefer, u, Expect(kind="digits", min_digits=len(d),
                                                                             max_digits=len(d)))) == d
                      for u, d in digits8)
        right_y = sum(yes_no_meaning(answer(engine, cross, prefer, u, Expect(kind="yesno"))) == a for u, a in yesno8)
        total = 2 * len(other)
        print(f"  {name:<34} false accepts {100 * (fa['digits'] + fa['yesno']) / total:5.1f} % "
              f"(digits {fa['digits']}/{len(other)}, yes/no {fa['yesno']}/{len(other)})   in-grammar right: "
              f"digits {right_d}/{len(digits8)}, yes/no {right_y}/{len(yesno8)}")


if __name__ == "__main__":
    raise SystemExit(main())
