"""Vosk (Kaldi) recognition when a Vosk model directory is configured.

Open speech uses the model's full vocabulary; closed sets use a runtime grammar (a JSON phrase
list) so only expected answers can come out. ``VoskEngine.stream`` gives partial results while
audio arrives. No English Vosk model can be fetched from the package registries this gateway
installs from, so the model directory is always supplied by the operator; a missing or invalid
one is an ``AsrError`` naming the path.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from gateway.core.actions import Expect
from gateway.voice.asr.base import ENGINE_RATE, AsrError, Transcript
from gateway.voice.asr.grammar import vosk_grammar_for

MODEL_MARKERS = ("am/final.mdl", "final.mdl", "conf/model.conf")
"""Files one of which every Kaldi/Vosk model directory holds."""


def check_vosk_dir(path: Path) -> None:
    """Raise ``AsrError`` unless ``path`` looks like a Vosk model directory."""
    if not path.is_dir():
        raise AsrError(f"Vosk model directory {path} does not exist (set voice.asr.vosk_model_dir to a Vosk model)")
    if not any((path / marker).is_file() for marker in MODEL_MARKERS):
        raise AsrError(
            f"Vosk model directory {path} holds no model (expected one of {', '.join(MODEL_MARKERS)})"
        )


class VoskStream:
    """One utterance being recognized: feed audio, read partials, then finish."""

    def __init__(self, recognizer: object, engine: str, sample_rate: int) -> None:
        self._rec = recognizer
        self._engine = engine
        self._rate = sample_rate
        self._bytes = 0
        self._decode = 0.0

    def feed(self, pcm: bytes) -> str:
        """Add audio; returns the current partial text."""
        start = time.perf_counter()
        self._bytes += len(pcm)
        if self._rec.AcceptWaveform(pcm):  # type: ignore[attr-defined]
            text = json.loads(self._rec.Result()).get("text", "")  # type: ignore[attr-defined]
        else:
            text = json.loads(self._rec.PartialResult()).get("partial", "")  # type: ignore[attr-defined]
        self._decode += time.perf_counter() - start
        return text

    def finish(self) -> Transcript:
        """Final result of the utterance."""
        start = time.perf_counter()
        result = json.loads(self._rec.FinalResult())  # type: ignore[attr-defined]
        words = [w for w in result.get("result", []) if w.get("word") != "[unk]"]
        text = " ".join(w for w in result.get("text", "").split() if w != "[unk]")
        confidence = sum(float(w.get("conf", 0.0)) for w in words) / len(words) if words else 0.0
        self._decode += time.perf_counter() - start
        return Transcript(text, confidence, self._engine, self._bytes / (2 * self._rate), self._decode)


class VoskEngine:
    """A loaded Vosk model; recognizers are created per utterance (thread-safe model)."""

    name = "vosk"

    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = Path(model_dir)
        check_vosk_dir(self.model_dir)
        try:
            import vosk
        except ImportError as exc:
            raise AsrError("vosk is not installed (pip install vosk)") from exc
        vosk.SetLogLevel(-1)
        self._vosk = vosk
        try:
            self._model = vosk.Model(str(self.model_dir))
        except Exception as exc:  # noqa: BLE001 - vosk raises bare Exception on a bad model
            raise AsrError(f"Vosk could not load the model in {self.model_dir}: {exc}") from exc
        self._lock = threading.Lock()

    def stream(self, expect: Expect, sample_rate: int = ENGINE_RATE) -> VoskStream:
        """A recognizer for one utterance at ``sample_rate`` (Vosk resamples to its model's rate),
        restricted to the expected phrases for closed sets."""
        try:
            if expect.closed:
                rec = self._vosk.KaldiRecognizer(self._model, float(sample_rate), vosk_grammar_for(expect))
            else:
                rec = self._vosk.KaldiRecognizer(self._model, float(sample_rate))
            rec.SetWords(True)
        except Exception as exc:  # noqa: BLE001 - vosk raises bare Exception
            raise AsrError(f"Vosk could not create a recognizer: {exc}") from exc
        return VoskStream(rec, self.name, sample_rate)

    def recognize(self, pcm: bytes, sample_rate: int, expect: Expect) -> Transcript:
        """Decode a whole utterance (blocking)."""
        stream = self.stream(expect, sample_rate)
        step = sample_rate * 2 // 5  # 200 ms chunks, as audio would arrive
        for i in range(0, len(pcm), step):
            stream.feed(pcm[i:i + step])
        return stream.finish()
