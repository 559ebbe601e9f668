"""Call recordings: both sides in a two-channel FLAC file, sensitive answers silent, and what
retention and erasure do to them."""

from __future__ import annotations

import os
import time

import numpy as np
import soundfile

from gateway.context.recordings import erase_recordings, expire_recordings, recording_path, recordings_of
from gateway.voice.recording import CallRecorder

RATE = 8000
FRAME = RATE // 50


def _tone(level: int) -> bytes:
    return (np.full(FRAME, level, dtype="<i2")).tobytes()


def test_both_sides_are_recorded_and_a_sensitive_answer_is_silence(tmp_path):
    rec = CallRecorder(tmp_path, "conv-1", "call-1", RATE)
    for _ in range(10):  # the caller talks, the bot listens
        rec.caller(_tone(1000))
        rec.bot(bytes(FRAME * 2))
    rec.sensitive = True  # "key in your PIN"
    for _ in range(10):
        rec.caller(_tone(2000))
        rec.bot(_tone(500))
    rec.sensitive = False
    rec.caller(_tone(3000))
    rec.bot(_tone(500))
    path = rec.close(keep=True)
    assert path == recording_path(tmp_path, "conv-1", "call-1") and path.exists()
    data, rate = soundfile.read(str(path), dtype="int16")
    assert rate == RATE and data.shape == (21 * FRAME, 2)
    caller, bot = data[:, 0], data[:, 1]
    assert (caller[:10 * FRAME] == 1000).all() and (bot[:10 * FRAME] == 0).all()
    assert (caller[10 * FRAME:20 * FRAME] == 0).all() and (bot[10 * FRAME:20 * FRAME] == 500).all()  # the PIN is not there
    assert (caller[20 * FRAME:] == 3000).all()
    assert rec.silenced_frames == 10


def test_a_recording_not_kept_leaves_nothing(tmp_path):
    rec = CallRecorder(tmp_path, "conv-2", "call-2", RATE)
    rec.caller(_tone(1000))
    rec.bot(_tone(1000))
    assert rec.close(keep=False) is None
    assert not (tmp_path / "recordings" / "conv-2").exists()


def test_an_id_cannot_leave_the_recordings_folder(tmp_path):
    path = recording_path(tmp_path, "../../etc", "../passwd")
    assert tmp_path / "recordings" in path.parents and ".." not in path.parts


def test_erasure_and_retention_reach_the_files(tmp_path):
    for cid in ("keep", "erase", "old"):
        rec = CallRecorder(tmp_path, cid, "call", RATE)
        rec.caller(_tone(100))
        rec.bot(_tone(100))
        rec.close(keep=True)
    assert [p.parent.name for p in recordings_of(tmp_path, ["keep", "erase", "old", "none"])] == ["keep", "erase", "old"]
    assert erase_recordings(tmp_path, ["erase"]) == 1 and recordings_of(tmp_path, ["erase"]) == []
    old = recordings_of(tmp_path, ["old"])[0]
    week_ago = time.time() - 7 * 86400
    os.utime(old, (week_ago, week_ago))
    assert expire_recordings(tmp_path, time.time() - 86400) == 1
    assert recordings_of(tmp_path, ["old"]) == [] and len(recordings_of(tmp_path, ["keep"])) == 1
