"""Call recordings: both sides in a two-channel FLAC file, sensitive answers silent, and what
retention and erasure do to them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

from gateway.context.recordings import erase_recordings, expire_recordings, recording_path, recordings_of
from gateway.config import RecordingSettings
from gateway.voice.recording import MAX_SKEW_FRAMES, CallRecorder, SessionRecording, writer_thread

RATE = 8000
FRAME = RATE // 50


def _tone(level: int) -> bytes:
    return (np.full(FRAME, level, dtype="<i2")).tobytes()


@pytest.mark.parametrize("thread", [False, True], ids=["inline", "writer-thread"])
def test_both_sides_are_recorded_and_a_sensitive_answer_is_silence(tmp_path, thread):
    rec = CallRecorder(tmp_path, "conv-1", "call-1", RATE, writer_thread() if thread else None)
    n = 60  # frames per part: more than one write batch
    for _ in range(n):  # the caller talks, the bot listens
        rec.caller(_tone(1000))
        rec.bot(bytes(FRAME * 2))
    rec.sensitive = True  # "key in your PIN"
    for _ in range(n):
        rec.caller(_tone(2000))
        rec.bot(_tone(500))
    rec.sensitive = False
    rec.caller(_tone(3000))
    rec.bot(_tone(500))
    assert thread == (rec.writing is not None)
    path = rec.close(keep=True)
    assert path == recording_path(tmp_path, "conv-1", "call-1") and path.exists()
    data, rate = soundfile.read(str(path), dtype="int16")
    assert rate == RATE and data.shape == ((2 * n + 1) * FRAME, 2)
    caller, bot = data[:, 0], data[:, 1]
    assert (caller[:n * FRAME] == 1000).all() and (bot[:n * FRAME] == 0).all()
    assert (caller[n * FRAME:2 * n * FRAME] == 0).all() and (bot[n * FRAME:2 * n * FRAME] == 500).all()  # no PIN
    assert (caller[2 * n * FRAME:] == 3000).all()
    assert rec.silenced_frames == n


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


def test_one_side_running_ahead_is_padded_with_silence_not_queued(tmp_path):
    rec = CallRecorder(tmp_path, "conv-3", "call-3", RATE)
    for _ in range(MAX_SKEW_FRAMES + 50):  # the connector pulls the bot's audio, the caller's stopped
        rec.bot(_tone(700))
    assert len(rec._bot) + len(rec._caller) < 2 * (MAX_SKEW_FRAMES + 2)  # nothing piles up
    rec.caller(_tone(900))
    data, _ = soundfile.read(str(rec.close(keep=True)), dtype="int16")  # the tail is written against silence
    assert data.shape == ((MAX_SKEW_FRAMES + 50) * FRAME, 2) and (data[:, 1] == 700).all()
    caller = data[:, 0].reshape(-1, FRAME)
    assert not caller[:50].any() and (caller[50] == 900).all() and not caller[51:].any()


def test_a_call_cut_at_the_length_limit_is_still_deleted_when_it_must_not_stay(tmp_path, monkeypatch):
    monkeypatch.setattr("gateway.voice.recording.MAX_RECORDING_SECONDS", 0.2)  # 10 frames
    rec = CallRecorder(tmp_path, "conv-4", "call-4", RATE)
    for _ in range(12):
        rec.caller(_tone(100))
        rec.bot(_tone(100))
    assert rec.closed and rec.path.exists() and rec.frames == 10
    assert rec.close(keep=False) is None and not rec.path.exists()


def test_a_sensitive_question_before_the_recorder_starts_is_silenced_from_its_first_frame(tmp_path):
    rec = SessionRecording(RecordingSettings(enabled=True), tmp_path, call_id="call-5", channel="voice",
                           sample_rate=RATE)
    rec.question(True)  # a resumed conversation opens at the PIN question
    rec.open("conv-5")
    rec.caller(_tone(1000))
    rec.bot(_tone(1))
    assert rec.recorder is not None and rec.recorder.silenced_frames == 1


FULL_DISK = """
import logging, resource, sys
from pathlib import Path
import numpy as np
from gateway.config import RecordingSettings
from gateway.voice.recording import SessionRecording, writer_thread
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # writes past 64 KB fail (EFBIG)
rec = SessionRecording(RecordingSettings(enabled=True), Path(sys.argv[1]), call_id="call-9", channel="voice",
                       sample_rate=8000)
rec.open("conv-9")
noise = np.random.default_rng(0).integers(-3000, 3000, (1500, 160)).astype("<i2")
for frame in noise:  # 30 s of noise: about 240 KB of FLAC
    rec.caller(frame.tobytes())
    rec.bot(frame.tobytes())
writer_thread().submit(lambda: None).result()  # the writer has tried every batch handed to it
for frame in noise[:50]:  # a call goes on at 50 frames a second: its next second finds the failed write
    rec.caller(frame.tobytes())
    rec.bot(frame.tobytes())
print("frames after", rec.recorder is None)
"""


def test_a_recorder_that_runs_out_of_space_logs_one_line_stops_and_leaves_no_half_file(tmp_path):
    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    errors = [line for line in lines if line.startswith("ERROR")]
    assert errors == ["ERROR call call-9: recording stopped: LibsndfileError: System error."]
    assert lines[-1] == "frames after True"
    assert not list((tmp_path / "recordings").rglob("*"))
