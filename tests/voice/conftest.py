"""Shared fixtures of the voice tests."""

from __future__ import annotations

from typing import Iterator

import pytest

from gateway.config import AsrSettings
from gateway.voice.asr.pool import WhisperPool
from gateway.voice.asr.router import resolve_path

MODEL_DIR = resolve_path(AsrSettings().whisper_model_dir, None)
"""The Whisper model the setup step assembles."""


@pytest.fixture(scope="module")
def pool() -> Iterator[WhisperPool]:
    """A two-worker Whisper pool for one test module (``test_vad`` has its own ``pool``: VAD)."""
    whisper = WhisperPool(MODEL_DIR, workers=2, window_seconds=10.0, decode_timeout=90.0)
    whisper.start()
    yield whisper
    whisper.close()
