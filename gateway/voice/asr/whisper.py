"""Whisper (CTranslate2, int8) decoding with a short encoder window instead of the padded 30 s.

``faster_whisper.WhisperModel.transcribe`` always feeds the encoder 3000 mel frames (30 s), so a
two-second answer costs as much as thirty seconds of speech. CTranslate2's Whisper model accepts
a shorter input, so this decoder builds the log-mel features itself (faster-whisper's
``FeatureExtractor``), pads the audio to a fixed window (10 s by default: 1000 frames), and calls
the model's ``generate()`` with the transcription prompt (start of transcript, language,
transcribe, no timestamps). A window that hugs the utterance makes the decoder hallucinate, so the
window is fixed with room to spare; longer utterances use a 30 s window, and audio longer than
that is decoded in 30 s pieces.

This module runs inside recognizer worker processes (``gateway.voice.asr.pool``); it never runs on
the gateway's event loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.voice.asr.base import ENGINE_RATE, AsrError

HOP = 160
"""Samples per mel frame at 16 kHz (10 ms)."""
FULL_WINDOW_SECONDS = 30.0
"""Whisper's native window; the encoder has positions for no more."""
WINDOW_MARGIN_SECONDS = 1.0
"""An utterance gets the short window only if it leaves at least this much padding."""
MAX_NEW_TOKENS = 200
"""Decoding limit per window (30 s of fast speech is about 150 tokens)."""
HINTS = {"digits": "1-0-0-4-2. 7-3-0-0-9-1."}
"""Text given to the decoder as what was said before (Whisper's previous-text prompt), per hint.
At a digits question Whisper otherwise writes digit strings as numerals and miscounts their runs
of zeros ("four, zero, zero, zero, two" -> "400002", "two zero zero zero one" -> "2.001") and
drops "oh" ("one oh two three" -> "103"); after this prompt it writes them one by one, as here
("4-0-0-0-2", "1-0-2-3"): order numbers 12 -> 17 of 18 right, the digit corpus 12 -> 17 of 18
(bench.asr). Speech that is no digit string is still written as said (bench.asr, rejection)."""
TOKENS_PER_SECOND = 8
"""Token budget per second of audio (fast speech is about 4-5): bounds a hallucination loop."""
INSTALL_HINT = "python -m gateway.voice.model_install"


@dataclass(frozen=True)
class WhisperResult:
    """Text and scores for one utterance."""

    text: str
    confidence: float
    no_speech_prob: float
    window_seconds: float
    decode_seconds: float


def check_model_dir(model_dir: Path) -> None:
    """Raise ``AsrError`` naming the path and the setup command if the model is incomplete."""
    missing = [n for n in ("model.bin", "config.json", "tokenizer.json") if not (model_dir / n).is_file()]
    if missing:
        raise AsrError(
            f"Whisper model not found in {model_dir} (missing {', '.join(missing)}); "
            f"assemble it with: {INSTALL_HINT}"
        )


def window_for(seconds: float, window_seconds: float) -> float:
    """Encoder window for an utterance of ``seconds``: the configured one, or 30 s if it is too long."""
    if seconds + WINDOW_MARGIN_SECONDS <= window_seconds:
        return window_seconds
    return FULL_WINDOW_SECONDS


class WhisperDecoder:
    """One loaded Whisper model; ``transcribe`` decodes a batch of utterances."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        threads: int = 1,
        window_seconds: float = 10.0,
        beam_size: int = 1,
        language: str = "en",
    ) -> None:
        import ctranslate2
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor
        from faster_whisper.tokenizer import Tokenizer

        self.model_dir = Path(model_dir)
        check_model_dir(self.model_dir)
        if not 1.0 <= window_seconds <= FULL_WINDOW_SECONDS:
            raise AsrError(f"whisper window of {window_seconds} s is outside 1-30 s")
        self.window_seconds = window_seconds
        self.beam_size = beam_size
        try:
            self.model = ctranslate2.models.Whisper(
                str(self.model_dir), device="cpu", compute_type="int8", intra_threads=threads, inter_threads=1
            )
        except (RuntimeError, ValueError) as exc:
            raise AsrError(f"cannot load the Whisper model in {self.model_dir}: {exc}; reinstall with: {INSTALL_HINT}") from exc
        self.tokenizer = Tokenizer(
            tokenizers.Tokenizer.from_file(str(self.model_dir / "tokenizer.json")),
            self.model.is_multilingual,
            task="transcribe",
            language=language,
        )
        self.features = FeatureExtractor(feature_size=self.model.n_mels)
        self.prompt = [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]
        self._hinted = {hint: [self.tokenizer.sot_prev, *self.tokenizer.encode(" " + text), *self.prompt]
                        for hint, text in HINTS.items()}
        self.suppress = self._suppressed_tokens()

    def _suppressed_tokens(self) -> list[int]:
        tok = self.tokenizer
        ids = set(tok.non_speech_tokens)
        ids.update((tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech))
        return sorted(ids)

    def mel(self, samples: np.ndarray, window_seconds: float) -> np.ndarray:
        """Log-mel features of ``samples`` (float32, 16 kHz) padded with silence to the window."""
        n = int(round(window_seconds * ENGINE_RATE))
        padded = np.zeros(n, dtype=np.float32)
        padded[: min(n, len(samples))] = samples[:n]
        feats = self.features(padded, padding=0)
        return feats[:, : n // HOP].astype(np.float32)

    def prompt_for(self, hint: str) -> list[int]:
        """The decoder's prompt tokens for ``hint`` (a key of ``HINTS``; "" or unknown: none)."""
        return self._hinted.get(hint, self.prompt)

    def transcribe(self, batch: list[np.ndarray], window_seconds: float | None = None,
                   hint: str = "") -> list[WhisperResult]:
        """Decode utterances (float32, 16 kHz) sharing one window and ``hint`` (``HINTS``); longer
        ones are split in pieces."""
        groups: dict[float, list[int]] = {}
        pieces: list[list[np.ndarray]] = []
        for i, samples in enumerate(batch):
            seconds = len(samples) / ENGINE_RATE
            window = window_seconds or window_for(seconds, self.window_seconds)
            step = int(window * ENGINE_RATE)
            count = max(1, math.ceil(len(samples) / step))
            pieces.append([samples[k * step:(k + 1) * step] for k in range(count)])
            groups.setdefault(window, []).append(i)
        results: dict[int, WhisperResult] = {}
        for window, members in groups.items():
            flat = [(i, piece) for i in members for piece in pieces[i]]
            decoded = self._generate([p for _i, p in flat], window, hint)
            for i in members:
                parts = [d for (j, _p), d in zip(flat, decoded) if j == i]
                results[i] = WhisperResult(
                    text=" ".join(p.text for p in parts if p.text).strip(),
                    confidence=float(np.mean([p.confidence for p in parts])),
                    no_speech_prob=float(np.min([p.no_speech_prob for p in parts])),
                    window_seconds=window,
                    decode_seconds=parts[0].decode_seconds,
                )
        return [results[i] for i in range(len(batch))]

    def _generate(self, pieces: list[np.ndarray], window: float, hint: str = "") -> list[WhisperResult]:
        import ctranslate2

        start = time.perf_counter()
        longest = max(len(p) for p in pieces) / ENGINE_RATE
        budget = min(MAX_NEW_TOKENS, int(10 + TOKENS_PER_SECOND * longest))
        feats = np.stack([self.mel(p, window) for p in pieces])
        storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats))
        prompt = self.prompt_for(hint)
        results = self.model.generate(
            storage,
            [prompt] * len(pieces),
            beam_size=self.beam_size,
            max_length=len(prompt) + budget,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self.suppress,
            no_repeat_ngram_size=0,
        )
        elapsed = time.perf_counter() - start
        out = []
        for res in results:
            tokens = [t for t in res.sequences_ids[0] if t < self.tokenizer.eot]
            text = self.tokenizer.decode(tokens).strip()
            score = res.scores[0] if res.scores else 0.0
            avg_logprob = score  # CTranslate2 returns the length-normalized log probability
            out.append(
                WhisperResult(
                    text=text,
                    confidence=float(min(1.0, math.exp(avg_logprob))),
                    no_speech_prob=float(res.no_speech_prob),
                    window_seconds=window,
                    decode_seconds=elapsed,
                )
            )
        return out
