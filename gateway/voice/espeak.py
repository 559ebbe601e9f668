"""espeak-ng through its C library, as shipped in the ``espeakng-loader`` wheel (no apt needed).

The fallback voice of ``gateway.voice.tts``: robotic but always available. libespeak-ng keeps
global state, so one synthesis runs at a time (a class-wide lock).
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

ESPEAK_DEFAULT_VOICE = "en-us"


class TtsError(RuntimeError):
    """No engine could speak the text (hibari and espeak-ng both failed)."""


class EspeakEngine:
    """espeak-ng through its C library (from ``espeakng-loader``); one synthesis at a time."""

    name = "espeak"
    _lock = threading.Lock()
    _lib: ctypes.CDLL | None = None
    _rate = 0
    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self, voice: str = ESPEAK_DEFAULT_VOICE) -> None:
        self.voice = voice
        with EspeakEngine._lock:
            if EspeakEngine._lib is None:
                import espeakng_loader

                lib = ctypes.CDLL(espeakng_loader.get_library_path())
                lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
                lib.espeak_Initialize.restype = ctypes.c_int
                data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
                rate = lib.espeak_Initialize(2, 0, data_parent, 0)  # 2 = AUDIO_OUTPUT_SYNCHRONOUS
                if rate <= 0:
                    raise TtsError(f"espeak-ng failed to initialize (code {rate})")
                lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
                lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
                lib.espeak_Synth.argtypes = [
                    ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                    ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
                ]
                EspeakEngine._lib, EspeakEngine._rate = lib, rate
        self.sample_rate = EspeakEngine._rate

    def synthesize(self, text: str, speed: float) -> tuple[np.ndarray, int]:
        """Whole text -> (float32 samples, rate)."""
        lib = EspeakEngine._lib
        assert lib is not None
        chunks: list[bytes] = []

        def collect(wav: ctypes._Pointer, count: int, _events: int) -> int:
            if wav and count > 0:
                chunks.append(ctypes.string_at(wav, count * 2))
            return 0

        callback = self._CALLBACK(collect)
        data = text.encode("utf-8")
        with EspeakEngine._lock:
            lib.espeak_SetSynthCallback(callback)
            if lib.espeak_SetVoiceByName(self.voice.encode()) != 0:
                raise TtsError(f"espeak-ng has no voice {self.voice!r}")
            lib.espeak_SetParameter(1, int(175 * speed), 0)  # 1 = espeakRATE, words per minute
            err = lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 1, None, None)  # 1 = espeakCHARS_UTF8
            lib.espeak_Synchronize()
        if err != 0:
            raise TtsError(f"espeak-ng synthesis failed (code {err})")
        pcm = b"".join(chunks)
        return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, self.sample_rate
