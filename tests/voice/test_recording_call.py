"""Call recordings end to end: a caller on a real AudioSocket connection, the real voice pipeline
(light engines: WebRTC VAD, pocketsphinx, espeak) and the real conversation core on the shipped
journeys. The caller wants to dispute a bill (``billing_dispute`` requires identity): the shipped
``verify_identity`` asks for the account number, then for the PIN (``sensitive: true``), both
keyed. Every caller frame carries its own number in its low bits (never zero, far below speech),
so the recording shows which frames of the caller it holds and which it silenced."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from gateway.app import build_core
from gateway.config import load_settings
from gateway.context import open_audit
from gateway.context.recordings import RECORDINGS_DIR, recordings_of
from gateway.governance.erasure import erase_customer
from gateway.telephony import audiosocket as asock
from gateway.telephony.audiosocket_server import AudioSocketServer
from gateway.voice.pipeline import VoicePipeline
from gateway.voice.recording import MAX_SKEW_FRAMES
from tests.telephony.helpers import until

pytestmark = pytest.mark.timeout(180)

RATE = 8000
SAMPLES = RATE // 50
LIGHT_VOICE = {"vad": {"engine": "webrtc"}, "tts": {"engine": "espeak"},
               "asr": {"open_engine": "pocketsphinx", "closed_engine": "pocketsphinx", "cross_check": False}}
ACCOUNT, PIN = "87654321", "1234#"  # Bob, of the sample CRM
INDEX_BITS = 16


def coded_frame(index: int) -> bytes:
    """A caller frame that says its number: sample k < 16 is 2 when bit k is set, every other 1."""
    samples = np.ones(SAMPLES, dtype="<i2")
    for bit in range(INDEX_BITS):
        if index >> bit & 1:
            samples[bit] = 2
    return samples.tobytes()


def frame_index(samples: np.ndarray) -> int:
    return sum(1 << bit for bit in range(INDEX_BITS) if samples[bit] == 2)


class Caller:
    """Asterisk's AudioSocket() side: a coded frame every 20 ms, keys between them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sent = 0
        self.keys: dict[str, list[int]] = {}
        self.tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._drain())]

    @classmethod
    async def dial(cls, port: int, call_uuid: str) -> Caller:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(asock.encode_uuid(call_uuid))
        return cls(reader, writer)

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            self.writer.write(asock.encode_audio(coded_frame(self.sent)))
            self.sent += 1
            await asyncio.sleep(max(0.0, start + self.sent * 0.02 - loop.time()))

    async def _drain(self) -> None:
        while await self.reader.read(4096):
            pass

    async def press(self, name: str, digits: str) -> None:
        """Key ``digits`` 100 ms apart; the frame number each was pressed at is kept under ``name``."""
        for digit in digits:
            self.keys.setdefault(name, []).append(self.sent)
            self.writer.write(asock.encode_dtmf(digit))
            await asyncio.sleep(0.1)

    async def wait_frames(self, n: int) -> None:
        end = self.sent + n
        await until(lambda: self.sent >= end, 10)

    async def hang_up(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.writer.write(asock.encode_hangup())
        self.writer.close()


async def call(tmp_path: Path, recordings: dict[str, Any], *, during: Any = None) -> dict[str, Any]:
    """One call: account number, PIN, the dispute question, then the caller hangs up. ``during``
    (called with the data directory and the conversation id once the dispute question is asked)
    looks at the files while the call lasts. What is left: settings, core, conversation, keys."""
    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "voice": LIGHT_VOICE, "audiosocket": {"port": 0},
        "journeys": {"default": "billing_dispute"}, "recordings": recordings})
    core = await build_core(settings)
    pipeline = VoicePipeline(settings, core)
    await pipeline.start()
    server = AudioSocketServer(settings, pipeline)
    await server.start()
    call_uuid = "7e0b5d22-3c1a-4f59-9d6e-6b1f0c2a9e41"
    try:
        caller = await Caller.dial(server.port, call_uuid)
        await until(lambda: call_uuid in pipeline.sessions, 10)
        session = pipeline.sessions[call_uuid]
        await until(lambda: session.expect.kind == "digits", 15)  # "... your eight digit account number"
        await caller.wait_frames(25)
        await caller.press("account", ACCOUNT)
        await until(lambda: session.expect.sensitive, 15)  # "... key in your four digit PIN"
        await caller.wait_frames(25)
        await caller.press("pin", PIN)
        await until(lambda: session.expect.kind == "open", 15)  # "What seems to be wrong with it?"
        conversation = session.conversation_id
        if during is not None:
            during(tmp_path, conversation)
        await caller.wait_frames(50)
        await caller.hang_up()
        await until(lambda: session.ended.is_set() and call_uuid not in pipeline.sessions, 15)
        record = await core.store.get(conversation)
    finally:
        await server.close()
        await pipeline.close()
    return {"settings": settings, "core": core, "conversation": conversation, "keys": caller.keys,
            "record": record, "session": session}


def live_part(data_dir: Path, conversation: str) -> None:
    parts = list((data_dir / RECORDINGS_DIR).glob(f"{conversation}/*.flac.part"))
    assert len(parts) == 1, "the call is being recorded while it lasts"


async def test_both_sides_are_recorded_the_pin_is_silence_and_erasure_removes_it(tmp_path):
    done = await call(tmp_path, {"enabled": True, "journeys": ["billing_dispute"]}, during=live_part)
    core, conversation, keys = done["core"], done["conversation"], done["keys"]
    try:
        files = recordings_of(tmp_path, [conversation])
        assert [f.name for f in files] == ["7e0b5d22-3c1a-4f59-9d6e-6b1f0c2a9e41.flac"]
        info = soundfile.info(str(files[0]))
        assert (info.channels, info.samplerate, info.format) == (2, RATE, "FLAC")
        data, _ = soundfile.read(str(files[0]), dtype="int16")
        caller, bot = data[:, 0], data[:, 1]
        assert len(caller) % SAMPLES == 0 and len(caller) >= 150 * SAMPLES
        frames = caller.reshape(-1, SAMPLES)
        assert all(f.all() for f in frames if f.any())  # a frame is the caller's as sent, or silence
        heard = [i for i, f in enumerate(frames) if f.any()]
        # at the hang-up the bot's side may be a few frames ahead: its tail is written against silence
        assert len(frames) - 1 - heard[-1] <= MAX_SKEW_FRAMES
        silent = [i for i, f in enumerate(frames[: heard[-1]]) if not f.any()]
        # one stretch of silence, from the PIN question to the next one, and none elsewhere
        assert silent and silent == list(range(silent[0], silent[-1] + 1))
        before, after = frame_index(frames[silent[0] - 1]), frame_index(frames[silent[-1] + 1])
        # the account number is heard (not a secret): the silence begins at the earliest with the
        # frame its last key would sound in, when the PIN question came that fast, and soon after it
        assert before + 1 >= keys["account"][-1] and before < keys["account"][-1] + 3 * 50
        # the frames from the first PIN digit to the last (a key pressed before frame n would sound
        # in frame n) are silence; "#" only ends the answer, and the next question ends the silence
        assert before < keys["pin"][0] and keys["pin"][-2] < after
        assert after < keys["pin"][-1] + 3 * 50
        assert frame_index(frames[heard[-1]]) >= keys["pin"][-1] + 40  # the caller is heard again until the end
        assert [frame_index(f) for f in frames if f.any()] == sorted({frame_index(f) for f in frames if f.any()})
        assert np.abs(bot).max() > 1000 and np.count_nonzero(bot) > RATE  # the prompts (cut short by the keys)
        assert done["session"].recording.recorder is None and done["session"].recording.kept == files[0]
        # erasure (voicegw erase) reaches the recording
        customer = done["record"].customer_id
        assert customer
        audit = open_audit(done["settings"])
        report = await erase_customer(done["settings"], core.store, audit, customer_id=customer, numbers=[],
                                      actor="test")
        await audit.close()
        assert report.stores["call recordings"] == {"files": 1}
        assert recordings_of(tmp_path, [conversation]) == []
        assert not (tmp_path / RECORDINGS_DIR / conversation).exists()
    finally:
        await core.store.close()


async def test_a_call_is_recorded_only_when_recordings_are_on_for_its_channel(tmp_path):
    on = await call(tmp_path / "on", {"enabled": True})
    off = await call(tmp_path / "off", {})  # the default: off
    other = await call(tmp_path / "other", {"enabled": True, "channels": ["sip"]})
    for done in (on, off, other):
        await done["core"].store.close()
    assert len(recordings_of(tmp_path / "on", [on["conversation"]])) == 1  # every journey (none listed)
    assert not (tmp_path / "off" / RECORDINGS_DIR).exists()
    assert not (tmp_path / "other" / RECORDINGS_DIR).exists()


async def test_a_call_that_ends_in_a_journey_not_listed_leaves_no_file(tmp_path):
    done = await call(tmp_path, {"enabled": True, "journeys": ["password_reset"]}, during=live_part)
    await done["core"].store.close()
    assert done["record"].journey == "billing_dispute"
    assert recordings_of(tmp_path, [done["conversation"]]) == []
    assert not list((tmp_path / RECORDINGS_DIR).rglob("*"))


async def test_a_recorder_that_cannot_write_costs_one_log_line_not_the_call(tmp_path, caplog):
    (tmp_path / RECORDINGS_DIR).write_text("not a folder")  # mkdir fails, as on a read-only disk
    with caplog.at_level(logging.INFO, logger="gateway.voice.recording"):
        done = await call(tmp_path, {"enabled": True})
    await done["core"].store.close()
    assert done["session"].expect.kind == "open"  # verified and asked about the bill: the call went on
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.voice.recording"]
    assert len(lines) == 1 and lines[0].startswith(
        f"call 7e0b5d22-3c1a-4f59-9d6e-6b1f0c2a9e41: not recorded: NotADirectoryError: [Errno 20] Not a directory: "
        f"'{tmp_path / RECORDINGS_DIR}/")
    assert done["session"].end_reason == "hangup"
