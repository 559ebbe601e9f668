"""A Whisper worker process: ``python -m gateway.voice.asr.worker FD CONFIG_JSON``.

Started by ``gateway.voice.asr.pool``; talks over the inherited socket ``FD``: it answers
``("ready", pid)`` once the model is loaded and warm, then one ``("ok", results)`` or
``("error", message)`` per ``(window, batch)`` request, and exits on ``None`` or a closed socket.
"""

from __future__ import annotations

import json
import os
import sys
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from gateway.voice.asr.base import ENGINE_RATE, AsrError
from gateway.voice.asr.whisper import WhisperDecoder


def _worker_main(conn: Connection, config: dict[str, Any]) -> None:
    """Worker process: load the model, warm it, then decode batches until told to stop."""
    try:
        decoder = WhisperDecoder(**config)
        decoder.transcribe([np.zeros(ENGINE_RATE, np.float32)])
    except AsrError as exc:
        conn.send(("failed", str(exc)))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        window, batch = message
        try:
            results = decoder.transcribe(batch, window)
        except Exception as exc:  # noqa: BLE001 - reported to the gateway as this batch's failure
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("ok", results))


if __name__ == "__main__":
    _worker_main(Connection(int(sys.argv[1])), json.loads(sys.argv[2]))
