"""A closed-set recognizer process: ``python -m gateway.voice.asr.closed_worker FD CONFIG_JSON``.

Started by ``gateway.voice.asr.closed.ClosedSetProcess``. CONFIG names the engine
(``{"engine": "pocketsphinx"}`` or ``{"engine": "vosk", "model_dir": PATH}``). The process loads
that one engine, warms it with a second of silence and answers ``("ready", pid)`` (or
``("failed", message)``), then one ``("ok", Transcript)`` or ``("error", message)`` per
``(pcm, sample_rate, expect)`` request, and exits on ``None`` or a closed socket. Grammars are
compiled here and cached per grammar text by the engine itself.
"""

from __future__ import annotations

import json
import sys
from multiprocessing.connection import Connection
from typing import Any

from gateway.core.actions import Expect
from gateway.voice.asr.base import AsrError, Engine
from gateway.voice.asr.worker_loop import serve_requests


def load_engine(config: dict[str, Any]) -> Engine:
    """The engine CONFIG names (raises ``AsrError`` if it cannot load)."""
    name = config.get("engine")
    if name == "pocketsphinx":
        from gateway.voice.asr.sphinx import PocketsphinxEngine

        return PocketsphinxEngine()
    if name == "vosk":
        from gateway.voice.asr.vosk_engine import VoskEngine

        return VoskEngine(config["model_dir"])
    raise AsrError(f"unknown closed-set recognizer {name!r}")


def _load_warm(config: dict[str, Any]) -> Engine:
    engine = load_engine(config)
    engine.recognize(b"\x00\x00" * 8000, 8000, Expect(kind="yesno"))  # warm up before saying ready
    return engine


def _worker_main(conn: Connection, config: dict[str, Any]) -> None:
    """Load, warm, then decode requests one at a time until told to stop."""
    serve_requests(conn, lambda: _load_warm(config), lambda engine, message: engine.recognize(*message),
                   lambda engine: engine.name)


if __name__ == "__main__":
    _worker_main(Connection(int(sys.argv[1])), json.loads(sys.argv[2]))
