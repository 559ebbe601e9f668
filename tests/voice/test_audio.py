"""gateway.voice.audio: G.711 tables, resampling, WAV files and their errors."""

from __future__ import annotations

import importlib
import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile

from gateway.voice import audio
from gateway.voice.audio import AudioFormatError

ALL_PCM = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def _tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def test_frame_bytes() -> None:
    assert audio.frame_bytes(8000) == 320
    assert audio.frame_bytes(16000) == 640
    with pytest.raises(AudioFormatError):
        audio.frame_bytes(11025)


# ITU-T G.711 table values (decoder output, scaled to 16 bits): mu-law codes are bit-inverted,
# 0xFF/0x7F are +0/-0, 0x80/0x00 the extremes +/-8031 (14-bit) = +/-32124; A-law 0xD5/0x55 are
# the smallest magnitudes +/-1 (13-bit, decoded at mid-step 8), 0xAA/0x2A the extremes +/-4032.
@pytest.mark.parametrize(
    "code,value",
    [(0xFF, 0), (0x7F, 0), (0x80, 32124), (0x00, -32124), (0xFE, 8), (0x7E, -8), (0xF0, 120), (0xEF, 132)],
)
def test_ulaw_decode_matches_itu_table(code: int, value: int) -> None:
    assert struct.unpack("<h", audio.ulaw_decode(bytes([code])))[0] == value


@pytest.mark.parametrize(
    "code,value",
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264), (0xF5, 528)],
)
def test_alaw_decode_matches_itu_table(code: int, value: int) -> None:
    assert struct.unpack("<h", audio.alaw_decode(bytes([code])))[0] == value


def test_ulaw_round_trip_exact_for_every_code() -> None:
    again = audio.ulaw_encode(audio.ulaw_decode(ALL_CODES))
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF  # negative zero encodes as positive zero
    assert again == bytes(expected)


def test_alaw_round_trip_exact_for_every_code() -> None:
    assert audio.alaw_encode(audio.alaw_decode(ALL_CODES)) == ALL_CODES


def test_g711_encode_is_monotonic_and_bounded_error() -> None:
    for enc, dec, step in ((audio.ulaw_encode, audio.ulaw_decode, 1024), (audio.alaw_encode, audio.alaw_decode, 1024)):
        back = np.frombuffer(dec(enc(ALL_PCM)), dtype="<i2").astype(np.int32)
        src = np.frombuffer(ALL_PCM, dtype="<i2").astype(np.int32)
        assert np.all(np.diff(back) >= 0)
        assert np.max(np.abs(back - src)) <= step  # largest segment step at full scale
        small = np.abs(src) < 256
        assert np.max(np.abs(back - src)[small]) <= 16  # fine steps near zero


def test_g711_matches_reference_implementation_when_available() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            audioop = importlib.import_module("audioop")
        except ModuleNotFoundError:
            pytest.skip("audioop not in this Python")
    assert audio.ulaw_encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)
    assert audio.alaw_encode(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)
    assert audio.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert audio.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_odd_length_pcm_is_a_width_error() -> None:
    with pytest.raises(AudioFormatError, match="16-bit"):
        audio.ulaw_encode(b"\x00\x01\x02")
    with pytest.raises(AudioFormatError):
        audio.pcm_to_float(b"\x00")


def test_float_pcm_conversion_clips_and_round_trips() -> None:
    pcm = audio.float_to_pcm(np.array([0.0, 0.5, -0.5, 2.0, -2.0], dtype=np.float32))
    assert np.frombuffer(pcm, "<i2").tolist() == [0, 16384, -16384, 32767, -32768]
    assert np.allclose(audio.pcm_to_float(pcm)[:3], [0.0, 0.5, -0.5])


def _dominant_freq(pcm: bytes, rate: int) -> float:
    x = audio.pcm_to_float(pcm)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def test_streaming_resampler_matches_length_and_keeps_the_tone() -> None:
    pcm = audio.float_to_pcm(_tone(440.0, 8000, 1.0))
    rs = audio.Resampler(8000, 16000)
    chunks = [rs.process(pcm[i:i + 320]) for i in range(0, len(pcm), 320)]
    out = b"".join(chunks) + rs.process(b"", last=True)
    assert len(out) == 2 * len(pcm)
    assert abs(_dominant_freq(out, 16000) - 440.0) < 3.0
    one_shot = audio.resample(pcm, 8000, 16000)
    assert len(one_shot) == len(out)
    down = audio.resample(out, 16000, 8000)
    assert len(down) == len(pcm)
    err = audio.pcm_to_float(down)[200:-200] - audio.pcm_to_float(pcm)[200:-200]
    assert float(np.sqrt(np.mean(err**2))) < 0.01


def test_resampler_same_rate_is_passthrough() -> None:
    rs = audio.Resampler(8000, 8000)
    assert rs.process(b"\x01\x02" * 10) == b"\x01\x02" * 10


def test_wav_round_trip(tmp_path: Path) -> None:
    pcm = audio.float_to_pcm(_tone(300.0, 8000, 0.5))
    path = tmp_path / "a.wav"
    audio.write_wav(path, pcm, 8000)
    assert audio.read_wav(path) == (pcm, 8000)


def test_read_wav_mixes_stereo_and_converts_width(tmp_path: Path) -> None:
    left = _tone(500.0, 16000, 0.3, 0.4)
    stereo = np.stack([left, left], axis=1)
    path = tmp_path / "s24.wav"
    soundfile.write(str(path), stereo, 16000, subtype="PCM_24")
    pcm, rate = audio.read_wav(path)
    assert rate == 16000 and len(pcm) == 2 * len(left)
    assert np.max(np.abs(audio.pcm_to_float(pcm) - left)) < 1e-3
    fpath = tmp_path / "f.wav"
    soundfile.write(str(fpath), left, 22050, subtype="FLOAT")
    pcm, rate = audio.read_wav(fpath)
    assert rate == 22050
    assert len(audio.load_pcm(fpath, 8000)) == pytest.approx(2 * len(left) * 8000 / 22050, abs=4)


def test_read_wav_errors_are_clear(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioFormatError, match="empty"):
        audio.read_wav(empty)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 20)
    with pytest.raises(AudioFormatError, match="not a readable audio file"):
        audio.read_wav(text)
    good = tmp_path / "good.wav"
    audio.write_wav(good, audio.float_to_pcm(_tone(300.0, 8000, 1.0)), 8000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[:4000])
    with pytest.raises(AudioFormatError, match="truncated"):
        audio.read_wav(cut)
    header_only = tmp_path / "header.wav"
    header_only.write_bytes(good.read_bytes()[:30])
    with pytest.raises(AudioFormatError):
        audio.read_wav(header_only)
    with pytest.raises(AudioFormatError, match="cannot read"):
        audio.read_wav(tmp_path / "missing.wav")
    no_frames = tmp_path / "none.wav"
    audio.write_wav(no_frames, b"", 8000)
    with pytest.raises(AudioFormatError, match="no audio"):
        audio.read_wav(no_frames)


def test_read_raw(tmp_path: Path) -> None:
    pcm = audio.float_to_pcm(_tone(300.0, 8000, 0.1))
    (tmp_path / "a.ul").write_bytes(audio.ulaw_encode(pcm))
    back, rate = audio.read_raw(tmp_path / "a.ul", 8000, "ulaw")
    assert rate == 8000 and len(back) == len(pcm)
    (tmp_path / "odd.raw").write_bytes(b"\x00" * 7)
    with pytest.raises(AudioFormatError, match="16-bit"):
        audio.read_raw(tmp_path / "odd.raw", 8000)
