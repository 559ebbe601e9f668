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
import os
import sys
from multiprocessing.connection import Connection
from typing import Any

from gateway.core.actions import Expect
from gateway.voice.asr.base import AsrError, Engine


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


def _worker_main(conn: Connection, config: dict[str, Any]) -> None:
    """Load, warm, then decode requests one at a time until told to stop."""
    try:
        engine = load_engine(config)
        engine.recognize(b"\x00\x00" * 8000, 8000, Expect(kind="yesno"))
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
        pcm, sample_rate, expect = message
        try:
            reply: tuple[str, Any] = ("ok", engine.recognize(pcm, sample_rate, expect))
        except AsrError as exc:
            reply = ("error", str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the gateway as this request's failure
            reply = ("error", f"{engine.name} failed: {type(exc).__name__}: {exc}")
        conn.send(reply)


if __name__ == "__main__":
    _worker_main(Connection(int(sys.argv[1])), json.loads(sys.argv[2]))
