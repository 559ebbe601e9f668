"""A Whisper worker process: ``python -m gateway.voice.asr.worker FD CONFIG_JSON``.

Started by ``gateway.voice.asr.pool``; talks over the inherited socket ``FD``: it answers
``("ready", pid)`` once the model is loaded and warm, then one ``("ok", results)`` or
``("error", message)`` per ``(window, batch, hint)`` request, and exits on ``None`` or a closed socket.
"""

from __future__ import annotations

import json
import sys
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from gateway.voice.asr.base import ENGINE_RATE
from gateway.voice.asr.whisper import WhisperDecoder
from gateway.voice.asr.worker_loop import serve_requests


def _load(config: dict[str, Any]) -> WhisperDecoder:
    decoder = WhisperDecoder(**config)
    decoder.transcribe([np.zeros(ENGINE_RATE, np.float32)])  # warm up before saying ready
    return decoder


def _decode(decoder: WhisperDecoder, message: tuple[Any, ...]) -> Any:
    window, batch, hint = message
    return decoder.transcribe(batch, window, hint)


def _worker_main(conn: Connection, config: dict[str, Any]) -> None:
    """Worker process: load the model, warm it, then decode batches until told to stop."""
    serve_requests(conn, lambda: _load(config), _decode,
                   lambda _decoder: "whisper")


if __name__ == "__main__":
    _worker_main(Connection(int(sys.argv[1])), json.loads(sys.argv[2]))
