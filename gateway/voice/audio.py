"""Call audio: 20 ms frames of 16-bit mono PCM, G.711 codecs, resampling and WAV files.

Everything inside the gateway's voice path is signed 16-bit little-endian mono PCM at the call's
rate (8000 or 16000 Hz), cut into 20 ms frames. This module converts at the edges:

- G.711 mu-law and A-law through numpy lookup tables built once from the ITU-T G.711 segment
  rules (the same integer algorithm as the Sun reference code every PBX uses), so a decode/encode
  round trip is exact and needs no ``audioop`` (removed in Python 3.13);
- sample-rate conversion with soxr, streaming (``Resampler``) or one-shot (``resample``);
- WAV (and raw PCM) files through soundfile, mixed down to mono int16, with one
  ``AudioFormatError`` naming the file and the problem for anything that is not usable audio.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile
import soxr

SAMPLE_WIDTH = 2
"""Bytes per sample: signed 16-bit little-endian."""
FRAME_MS = 20
"""Frame duration every connector exchanges with the voice session."""
SUPPORTED_RATES = (8000, 16000)
"""Call rates the voice path runs at (narrowband and wideband)."""
MAX_FILE_SECONDS = 3600.0
"""Longest audio file read at once; a longer one is refused rather than loaded into memory."""


class AudioFormatError(ValueError):
    """Audio that cannot be used: wrong sample width, empty, truncated or not audio at all."""


def frame_bytes(rate: int) -> int:
    """Bytes in one 20 ms frame at ``rate`` (320 at 8 kHz, 640 at 16 kHz)."""
    if rate <= 0 or rate * FRAME_MS % 1000:
        raise AudioFormatError(f"sample rate {rate} Hz does not divide into {FRAME_MS} ms frames")
    return rate * FRAME_MS // 1000 * SAMPLE_WIDTH


def check_pcm(pcm: bytes) -> None:
    """Raise ``AudioFormatError`` unless ``pcm`` is whole 16-bit samples."""
    if len(pcm) % SAMPLE_WIDTH:
        raise AudioFormatError(
            f"PCM of {len(pcm)} bytes is not whole 16-bit samples (odd length: wrong sample width?)"
        )


def pcm_to_float(pcm: bytes) -> np.ndarray:
    """16-bit PCM bytes -> float32 samples in [-1, 1)."""
    check_pcm(pcm)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm(samples: np.ndarray) -> bytes:
    """Float samples (nominally [-1, 1]) -> 16-bit PCM bytes, clipped, rounded to nearest."""
    arr = np.asarray(samples, dtype=np.float32)
    scaled = np.clip(np.rint(arr * 32768.0), -32768, 32767)
    return scaled.astype("<i2").tobytes()


def duration_seconds(pcm: bytes, rate: int) -> float:
    """Duration of 16-bit mono ``pcm`` at ``rate``."""
    return len(pcm) / (SAMPLE_WIDTH * rate)


# --- G.711 (ITU-T Rec. G.711, segment tables as in the Sun reference implementation) -------------

_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # 14-bit magnitude limit


def _build_ulaw_encode() -> np.ndarray:
    """Table indexed by (int16 sample as uint16) -> mu-law byte. Input is the 14-bit sample."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_UEND, mag, side="left")  # first segment whose end >= mag
    seg_c = np.minimum(seg, 7)
    uval = (seg_c << 4) | ((mag >> (seg_c + 1)) & 0xF)
    uval = np.where(seg >= 8, 0x7F, uval)
    codes = (uval ^ mask).astype(np.uint8)
    return np.roll(codes, -32768)  # index 0 = sample 0, index 0xFFFF = sample -1


def _build_ulaw_decode() -> np.ndarray:
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = ((u & 0x0F) << 3) + _ULAW_BIAS
    t = t << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype("<i2")


def _build_alaw_encode() -> np.ndarray:
    """Table indexed by (int16 sample as uint16) -> A-law byte. Input is the 13-bit sample."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_SEG_AEND, mag, side="left")
    seg_c = np.minimum(seg, 7)
    shift = np.where(seg_c < 2, 1, seg_c)
    aval = (seg_c << 4) | ((mag >> shift) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    codes = (aval ^ mask).astype(np.uint8)
    return np.roll(codes, -32768)


def _build_alaw_decode() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype("<i2")


ULAW_ENCODE = _build_ulaw_encode()
ULAW_DECODE = _build_ulaw_decode()
ALAW_ENCODE = _build_alaw_encode()
ALAW_DECODE = _build_alaw_decode()


def ulaw_encode(pcm: bytes) -> bytes:
    """16-bit PCM -> G.711 mu-law, one byte per sample."""
    check_pcm(pcm)
    return ULAW_ENCODE[np.frombuffer(pcm, dtype="<u2")].tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """G.711 mu-law -> 16-bit PCM."""
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    """16-bit PCM -> G.711 A-law, one byte per sample."""
    check_pcm(pcm)
    return ALAW_ENCODE[np.frombuffer(pcm, dtype="<u2")].tobytes()


def alaw_decode(data: bytes) -> bytes:
    """G.711 A-law -> 16-bit PCM."""
    return ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


# --- resampling -----------------------------------------------------------------------------------


class Resampler:
    """Streaming sample-rate converter for one audio stream (soxr, high quality).

    Feed chunks of any length with ``process``; output arrives with soxr's small filter delay,
    and ``process(b"", last=True)`` flushes the tail. Equal rates pass audio through untouched.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise AudioFormatError(f"bad resampling rates {in_rate} -> {out_rate} Hz")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16")
        )

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        """Convert the next chunk of 16-bit PCM; ``last=True`` also flushes buffered samples."""
        check_pcm(pcm)
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        out = self._stream.resample_chunk(samples, last=last)
        return np.ascontiguousarray(out, dtype="<i2").tobytes()


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Convert a whole 16-bit PCM buffer from ``in_rate`` to ``out_rate``."""
    check_pcm(pcm)
    if in_rate == out_rate or not pcm:
        return pcm
    if in_rate <= 0 or out_rate <= 0:
        raise AudioFormatError(f"bad resampling rates {in_rate} -> {out_rate} Hz")
    out = soxr.resample(np.frombuffer(pcm, dtype="<i2"), in_rate, out_rate)
    return np.ascontiguousarray(out, dtype="<i2").tobytes()


# --- files ----------------------------------------------------------------------------------------


def _check_riff(path: Path, head: bytes, size: int) -> None:
    """Refuse a RIFF/WAVE file whose data chunk claims more bytes than the file holds."""
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(head):
        chunk_id = head[pos:pos + 4]
        (chunk_len,) = struct.unpack("<I", head[pos + 4:pos + 8])
        if chunk_id == b"data":
            # 0 and 0xFFFFFFFF mark a stream written without knowing its length: accepted.
            if chunk_len not in (0, 0xFFFFFFFF) and pos + 8 + chunk_len > size:
                raise AudioFormatError(
                    f"{path}: truncated WAV: header declares {chunk_len} bytes of audio, "
                    f"file holds {max(0, size - pos - 8)}"
                )
            return
        pos += 8 + chunk_len + (chunk_len & 1)
    if size <= len(head):
        raise AudioFormatError(f"{path}: truncated WAV: no data chunk")


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """Read any WAV (or other soundfile format) as mono 16-bit PCM: returns ``(pcm, rate)``.

    Stereo is mixed down; 8/24/32-bit and float samples are converted. Rate is kept as stored.
    Raises ``AudioFormatError`` for a missing, empty, truncated or non-audio file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise AudioFormatError(f"{path}: cannot read: {exc.strerror}") from exc
    if size == 0:
        raise AudioFormatError(f"{path}: empty file")
    _check_riff(path, head, size)
    try:
        info = soundfile.info(str(path))
        if info.samplerate <= 0 or info.channels <= 0:
            raise AudioFormatError(f"{path}: bad header (rate {info.samplerate}, {info.channels} channels)")
        if info.frames > MAX_FILE_SECONDS * info.samplerate:
            raise AudioFormatError(
                f"{path}: {info.frames / info.samplerate:.0f} s of audio is longer than the "
                f"{MAX_FILE_SECONDS:.0f} s limit"
            )
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as exc:
        raise AudioFormatError(f"{path}: not a readable audio file ({exc.error_string})") from exc
    except (RuntimeError, TypeError) as exc:
        raise AudioFormatError(f"{path}: not a readable audio file ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioFormatError(f"{path}: holds no audio samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return float_to_pcm(mono), int(rate)


def write_wav(path: str | Path, pcm: bytes, rate: int) -> None:
    """Write 16-bit mono PCM to a WAV file."""
    check_pcm(pcm)
    samples = np.frombuffer(pcm, dtype="<i2")
    soundfile.write(str(path), samples, rate, subtype="PCM_16", format="WAV")


def read_raw(path: str | Path, rate: int, codec: str = "pcm16") -> tuple[bytes, int]:
    """Read a headerless file (``pcm16``, ``ulaw`` or ``alaw``) as 16-bit PCM at ``rate``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AudioFormatError(f"{path}: cannot read: {exc.strerror}") from exc
    if not data:
        raise AudioFormatError(f"{path}: empty file")
    if codec == "ulaw":
        return ulaw_decode(data), rate
    if codec == "alaw":
        return alaw_decode(data), rate
    if codec != "pcm16":
        raise AudioFormatError(f"unknown raw codec {codec!r}: use pcm16, ulaw or alaw")
    if len(data) % SAMPLE_WIDTH:
        raise AudioFormatError(f"{path}: {len(data)} bytes is not whole 16-bit samples")
    return data, rate


def load_pcm(path: str | Path, rate: int) -> bytes:
    """Read any WAV and return mono 16-bit PCM converted to ``rate``."""
    pcm, file_rate = read_wav(path)
    return resample(pcm, file_rate, rate)
