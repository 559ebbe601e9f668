"""Speech synthesis for prompts: hibari-tts by default, espeak-ng as the fallback, cached.

``Synthesizer.synthesize(text, rate)`` returns 16-bit PCM at the call's rate. The order of
sources for a prompt is: a recorded prompt file ``<prompts_dir>/<prompt_id>.wav`` (replaces the
text), the in-memory LRU, the on-disk cache (keyed by engine, voice, speed, rate and text), then
synthesis. Synthesis always runs in a worker thread, never on the event loop.

hibari (Apache-2.0) ships its voice "heart" inside the wheel; other hibari voices would be
downloaded on first use into ``HIBARI_HOME``. The gateway points ``HIBARI_HOME`` into its data
directory and only ever loads a voice file that is already on disk, so synthesis never touches the
network. If hibari cannot load or fails on a text, espeak-ng (the library and data shipped in the
``espeakng-loader`` wheel, driven through ctypes) speaks instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, Iterator

import numpy as np

from gateway.config import PACKAGE_ROOT, TtsSettings
from gateway.voice.audio import AudioFormatError, Resampler, float_to_pcm, load_pcm, read_wav, resample, write_wav
from gateway.voice.espeak import ESPEAK_DEFAULT_VOICE, EspeakEngine, TtsError

log = logging.getLogger(__name__)
__all__ = ["EspeakEngine", "HibariEngine", "Synthesizer", "TtsError"]

HIBARI_RATE = 24000
SEED = 7
"""Fixed noise seed: the same text always gives the same audio (cache-friendly, testable)."""
MEMORY_CACHE_BYTES = 32 * 1024 * 1024
"""In-memory LRU bound: about 35 minutes of 8 kHz prompts."""
MAX_TEXT_CHARS = 2000
"""Longer prompt texts are refused: a prompt is a few sentences, not a document."""
_PROMPT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
LEAD_KEEP_MS = 20
"""Silence kept before a sentence's first sound: hibari starts each sentence with 300-400 ms of
silence, which a caller waits through as if the bot were slow to answer."""
TRAIL_KEEP_MS = 250
"""Silence kept after a sentence (hibari leaves 500-700 ms): the pause before the next one."""
CLAUSE_TRAIL_KEEP_MS = 120
"""Silence kept after a reply's first clause when it is spoken apart (``first_clause``): a comma's
pause, not a sentence's."""
FIRST_CLAUSE_MIN_PHONEMES = 20
"""A reply's first sentence is synthesized in two pieces, its first clause first, when that clause
and the rest each have at least this many phonemes (about four words): the caller hears the
clause while the rest is made. Shorter clauses ("All right,") stay with what follows."""
SILENCE_LEVEL = 0.003
"""A 5 ms block quieter than this (about -50 dBFS) is silence."""
AUDIO_VERSION = "trimmed-2"
"""Part of every cache key: audio cached before the trimming and clause split above is not reused."""


def trim_silence(x: np.ndarray, rate: int, lead_ms: int = LEAD_KEEP_MS, trail_ms: int = TRAIL_KEEP_MS) -> np.ndarray:
    """``x`` (float samples) without the silence before its first and after its last sound,
    keeping ``lead_ms`` and ``trail_ms`` of it; all-silent audio is returned as it is."""
    block = max(1, rate // 200)
    n = len(x) // block
    if n == 0:
        return x
    levels = np.sqrt(np.mean(np.square(x[: n * block].reshape(n, block)), axis=1))
    loud = np.nonzero(levels > SILENCE_LEVEL)[0]
    if len(loud) == 0:
        return x
    start = max(0, int(loud[0]) * block - rate * lead_ms // 1000)
    end = min(len(x), (int(loud[-1]) + 1) * block + rate * trail_ms // 1000)
    return x[start:end]


_CLAUSE_END = re.compile(r"(?<=[,;:—])\s+")


def first_clause(phonemes: list[str]) -> list[tuple[str, int]]:
    """The phoneme strings (one per sentence) to synthesize one by one, each with the silence to
    keep after it: the first sentence split after its first clause when both pieces are long
    enough (``FIRST_CLAUSE_MIN_PHONEMES``), every other sentence whole."""
    pieces = [(ps, TRAIL_KEEP_MS) for ps in phonemes]
    if not phonemes:
        return pieces
    first = phonemes[0]
    for m in _CLAUSE_END.finditer(first):
        head, rest = first[: m.start()], first[m.end():]
        if len(head) >= FIRST_CLAUSE_MIN_PHONEMES:
            if len(rest) >= FIRST_CLAUSE_MIN_PHONEMES:
                return [(head, CLAUSE_TRAIL_KEEP_MS), (rest, TRAIL_KEEP_MS), *pieces[1:]]
            break
    return pieces


def _normalize_text(text: str) -> str:
    return " ".join(text.split())


class HibariEngine:
    """hibari-tts with one loaded voice model; thread-safe (onnxruntime sessions are).

    ``HibariEngine.shared(voice, home)`` keeps one loaded model per voice in the process.
    """

    name = "hibari"
    _loaded: dict[str, "HibariEngine"] = {}
    _load_lock = threading.Lock()

    @classmethod
    def shared(cls, voice: str, home: Path) -> "HibariEngine":
        """The process-wide engine for ``voice`` (loaded on first use)."""
        with cls._load_lock:
            engine = cls._loaded.get(voice)
            if engine is None:
                engine = cls._loaded[voice] = cls(voice, home)
            return engine

    def __init__(self, voice: str, home: Path) -> None:
        os.environ["HIBARI_HOME"] = str(home)
        from hibari import Hibari
        from hibari.voices import VOICES, voice_path

        if voice not in VOICES:
            raise TtsError(f"unknown hibari voice {voice!r}; known: {', '.join(VOICES)}")
        try:
            model = voice_path(voice, download_missing=False)
        except FileNotFoundError as exc:
            raise TtsError(
                f"hibari voice {voice!r} is not installed at {exc.args[0]} (only 'heart' ships in the "
                "package; voices are never downloaded at run time)"
            ) from exc
        self.voice = voice
        self._tts = Hibari(voice=voice, model=model, threads=1)

    def sentences(self, text: str, speed: float) -> Iterator[np.ndarray]:
        """One float32 24 kHz array per sentence, each as soon as it is synthesized."""
        yield from self._tts.stream(text, speed=speed, seed=SEED)

    def phonemes(self, text: str) -> list[str]:
        """The text's phonemes, one string per sentence, punctuation kept."""
        return list(self._tts.phonemize(text))

    def pieces(self, text: str, speed: float) -> Iterator[np.ndarray]:
        """The prompt's audio (float32, 24 kHz) in pieces, silence trimmed, each as soon as it is
        synthesized: the first clause of a long first sentence, then sentence by sentence
        (``first_clause``). A piece takes about 9 ms plus 0.2 ms per phoneme on this CPU alone and
        several times that on a loaded one; the caller hears the first while the next is made."""
        rng = np.random.default_rng(SEED)
        for ps, trail_ms in first_clause(self.phonemes(text)):
            wav = self._tts.from_ids(self._tts.ids(ps), speed, rng)
            yield trim_silence(wav, HIBARI_RATE, trail_ms=trail_ms)


class Synthesizer:
    """Prompt audio for calls: recorded prompts, caches, hibari, espeak-ng fallback."""

    def __init__(
        self,
        settings: TtsSettings,
        *,
        cache_dir: Path | None,
        prompts_dir: Path | None = None,
        threads: int = 2,
    ) -> None:
        self.settings = settings
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if prompts_dir is None and settings.prompts_dir:
            prompts_dir = Path(settings.prompts_dir)
            if not prompts_dir.is_absolute() and not prompts_dir.exists():
                prompts_dir = PACKAGE_ROOT / prompts_dir
        self.prompts_dir = prompts_dir
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tts")
        self._init_lock = threading.Lock()
        self._hibari: HibariEngine | None = None
        self._hibari_error: str = ""
        self._espeak: EspeakEngine | None = None
        self.stats = {"memory_hits": 0, "disk_hits": 0, "prompt_files": 0, "synthesized": 0, "fallbacks": 0}

    # --- public API ------------------------------------------------------------------------------

    async def synthesize(self, text: str, sample_rate: int, prompt_id: str = "") -> bytes:
        """16-bit PCM of ``text`` (or of the recorded prompt ``prompt_id``) at ``sample_rate``."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.synthesize_sync, text, sample_rate, prompt_id)

    async def stream(self, text: str, sample_rate: int, prompt_id: str = "") -> AsyncIterator[bytes]:
        """PCM chunks, the first as soon as the first clause is ready (cached audio: one chunk)."""
        loop = asyncio.get_running_loop()
        cached = await loop.run_in_executor(self._executor, self._lookup, text, sample_rate, prompt_id)
        if cached is not None:
            yield cached
            return
        text = _normalize_text(text)
        engine = await loop.run_in_executor(self._executor, self._engine)
        if not isinstance(engine, HibariEngine):
            yield await self.synthesize(text, sample_rate, prompt_id)
            return
        resampler = Resampler(HIBARI_RATE, sample_rate)
        sentences = engine.pieces(text, self.settings.speed)
        parts: list[bytes] = []
        done = object()
        try:
            while True:
                chunk = await loop.run_in_executor(self._executor, next, sentences, done)
                if chunk is done:
                    break
                pcm = resampler.process(float_to_pcm(chunk))
                parts.append(pcm)
                if pcm:
                    yield pcm
        except (RuntimeError, ValueError, KeyError) as exc:
            if parts:  # part of the prompt was already played: do not start it over in another voice
                log.warning("hibari failed while streaming %r: %s; prompt cut short", text[:60], exc)
                return
            log.warning("hibari failed while streaming %r: %s; speaking with espeak-ng", text[:60], exc)
            self.stats["fallbacks"] += 1
            yield await loop.run_in_executor(self._executor, self._espeak_pcm, text, sample_rate)
            return
        tail = resampler.process(b"", last=True)
        if tail:
            parts.append(tail)
            yield tail
        self.stats["synthesized"] += 1
        self._store(self._key("hibari", engine.voice, text, sample_rate), b"".join(parts), sample_rate)

    def synthesize_sync(self, text: str, sample_rate: int, prompt_id: str = "") -> bytes:
        """Blocking version of ``synthesize`` (for the CLI and benches; not on the event loop)."""
        cached = self._lookup(text, sample_rate, prompt_id)
        if cached is not None:
            return cached
        text = _normalize_text(text)
        engine = self._engine()
        if isinstance(engine, HibariEngine):
            try:
                parts = list(engine.pieces(text, self.settings.speed))
                audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
                pcm = resample(float_to_pcm(audio), HIBARI_RATE, sample_rate)
                self.stats["synthesized"] += 1
                self._store(self._key("hibari", engine.voice, text, sample_rate), pcm, sample_rate)
                return pcm
            except (RuntimeError, ValueError, KeyError) as exc:
                log.warning("hibari failed on %r: %s; speaking with espeak-ng", text[:60], exc)
                self.stats["fallbacks"] += 1
        return self._espeak_pcm(text, sample_rate)

    async def warm_up(self) -> None:
        """Load the engine (and its G2P) and run it once, before the first call needs it.

        The warm-up sentence bypasses the prompt cache: a cached sentence would leave the engine
        cold, and the first caller would wait for its first inference (about half a second)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._warm_engine)

    def _warm_engine(self) -> None:
        engine = self._engine()
        if isinstance(engine, HibariEngine):
            try:
                for _chunk in engine.sentences("Thanks for calling, one moment please.", self.settings.speed):
                    pass
            except (RuntimeError, ValueError, KeyError) as exc:
                log.warning("hibari warm-up failed: %s", exc)

    async def close(self) -> None:
        """Stop the worker threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def engine_name(self) -> str:
        """The engine speaking now ('hibari' or 'espeak')."""
        return self._engine().name

    # --- internals -------------------------------------------------------------------------------

    def _engine(self) -> HibariEngine | EspeakEngine:
        with self._init_lock:
            if self.settings.engine == "hibari" and self._hibari is None and not self._hibari_error:
                home = (self.cache_dir or Path.cwd()) / "hibari-home"
                try:
                    self._hibari = HibariEngine.shared(self.settings.voice, home)
                except (TtsError, OSError, RuntimeError, ImportError) as exc:
                    self._hibari_error = str(exc)
                    log.warning("hibari unavailable (%s); prompts are spoken by espeak-ng", exc)
            if self._hibari is not None:
                return self._hibari
            if self._espeak is None:
                voice = self.settings.voice if self.settings.engine == "espeak" else ESPEAK_DEFAULT_VOICE
                if voice == "heart":
                    voice = ESPEAK_DEFAULT_VOICE
                self._espeak = EspeakEngine(voice)
            return self._espeak

    def _espeak_pcm(self, text: str, sample_rate: int) -> bytes:
        with self._init_lock:
            if self._espeak is None:
                self._espeak = EspeakEngine(ESPEAK_DEFAULT_VOICE)
        espeak = self._espeak
        key = self._key("espeak", espeak.voice, text, sample_rate)
        cached = self._get(key)
        if cached is not None:
            return cached
        try:
            audio, rate = espeak.synthesize(text, self.settings.speed)
        except OSError as exc:
            raise TtsError(f"espeak-ng failed: {exc}") from exc
        pcm = resample(float_to_pcm(trim_silence(audio, rate)), rate, sample_rate)
        self.stats["synthesized"] += 1
        self._store(key, pcm, sample_rate)
        return pcm

    def _key(self, engine: str, voice: str, text: str, rate: int) -> str:
        raw = json.dumps([engine, voice, round(self.settings.speed, 3), rate, text, AUDIO_VERSION], ensure_ascii=False)
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def _lookup(self, text: str, sample_rate: int, prompt_id: str) -> bytes | None:
        """Recorded prompt, then memory, then disk; None when synthesis is needed."""
        if prompt_id:
            recorded = self._recorded(prompt_id, sample_rate)
            if recorded is not None:
                return recorded
        text = _normalize_text(text)
        if len(text) > MAX_TEXT_CHARS:
            raise TtsError(f"prompt text of {len(text)} characters is longer than {MAX_TEXT_CHARS}")
        if not text:
            return b""
        engine = self._engine()
        return self._get(self._key(engine.name, engine.voice, text, sample_rate))

    def _recorded(self, prompt_id: str, sample_rate: int) -> bytes | None:
        if self.prompts_dir is None:
            return None
        if not _PROMPT_ID.match(prompt_id):
            log.warning("ignoring prompt id %r: not a plain file name", prompt_id)
            return None
        path = self.prompts_dir / f"{prompt_id}.wav"
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return None
        key = f"prompt:{path}:{mtime}:{sample_rate}"
        pcm = self._memory_get(key)
        if pcm is None:
            try:
                pcm = load_pcm(path, sample_rate)
            except AudioFormatError as exc:
                log.warning("recorded prompt %s unusable (%s); synthesizing the text", path, exc)
                return None
            self._memory_put(key, pcm)
        self.stats["prompt_files"] += 1
        return pcm

    def _get(self, key: str) -> bytes | None:
        pcm = self._memory_get(key)
        if pcm is not None:
            self.stats["memory_hits"] += 1
            return pcm
        path = self._disk_path(key)
        if path is not None and path.is_file():
            try:
                pcm, _rate = read_wav(path)
            except AudioFormatError as exc:
                log.warning("dropping damaged prompt cache file %s: %s", path, exc)
                path.unlink(missing_ok=True)
                return None
            self.stats["disk_hits"] += 1
            self._memory_put(key, pcm)
            return pcm
        return None

    def _store(self, key: str, pcm: bytes, rate: int) -> None:
        self._memory_put(key, pcm)
        path = self._disk_path(key)
        if path is None or not pcm:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            write_wav(tmp, pcm, rate)
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot write prompt cache file %s: %s", path, exc)

    def _disk_path(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / key[:2] / f"{key}.wav"

    def _memory_get(self, key: str) -> bytes | None:
        with self._init_lock:
            pcm = self._memory.get(key)
            if pcm is not None:
                self._memory.move_to_end(key)
            return pcm

    def _memory_put(self, key: str, pcm: bytes) -> None:
        with self._init_lock:
            old = self._memory.pop(key, None)
            if old is not None:
                self._memory_bytes -= len(old)
            self._memory[key] = pcm
            self._memory_bytes += len(pcm)
            while self._memory_bytes > MEMORY_CACHE_BYTES and len(self._memory) > 1:
                _k, dropped = self._memory.popitem(last=False)
                self._memory_bytes -= len(dropped)


def first_audio_seconds(synth: Synthesizer, text: str, rate: int) -> float:
    """Seconds until the first chunk of a (non-cached) streamed synthesis: for benches."""

    async def run() -> float:
        start = time.perf_counter()
        async for _chunk in synth.stream(text, rate):
            return time.perf_counter() - start
        return time.perf_counter() - start

    return asyncio.run(run())
