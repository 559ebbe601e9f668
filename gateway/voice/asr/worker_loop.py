"""The request loop every recognizer worker process runs (Whisper and closed-set alike).

The parent talks over a ``multiprocessing`` connection: the worker answers ``("ready", pid)``
once its engine is loaded and warm (or ``("failed", message)``), then exactly one ``("ok",
result)`` or ``("error", message)`` per request, and exits on ``None`` or a closed socket.
"""

from __future__ import annotations

import os
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator, TypeVar

from gateway.voice.asr.base import AsrError

T = TypeVar("T")

RECOGNIZER_NICE = 5
"""Recognizer processes run this much nicer than the gateway: when the cores are short, the
20 ms audio clock of every call comes first and recognition waits (turns get slower, audio
never breaks up). Five steps: the gateway gets about three times a worker's share."""


def announce(conn: Connection, load: Callable[[], T], *, nice: bool = True) -> T | None:
    """Run ``RECOGNIZER_NICE`` nicer (when ``nice``), load, and say ``ready`` (or ``failed`` and
    return None: ``AsrError`` refuses to start)."""
    if nice:
        try:
            os.nice(RECOGNIZER_NICE)
        except OSError:  # not permitted here: the worker runs at the gateway's priority
            pass
    try:
        engine = load()
    except AsrError as exc:
        conn.send(("failed", str(exc)))
        return None
    conn.send(("ready", os.getpid()))
    return engine


def messages(conn: Connection, idle: Callable[[], None] | None = None,
             idle_seconds: float = 1.0) -> Iterator[Any]:
    """The gateway's messages until ``None`` or a closed socket; ``idle()`` runs whenever none
    came for ``idle_seconds``."""
    while True:
        try:
            if idle is not None and not conn.poll(idle_seconds):
                idle()
                continue
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        yield message


def serve_requests(conn: Connection, load: Callable[[], T], handle: Callable[[T, Any], Any],
                   name: Callable[[T], str]) -> None:
    """Load, then answer requests one at a time until told to stop."""
    engine = announce(conn, load)
    if engine is None:
        return
    for message in messages(conn):
        try:
            reply: tuple[str, Any] = ("ok", handle(engine, message))
        except AsrError as exc:
            reply = ("error", str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the gateway as this request's failure
            reply = ("error", f"{name(engine)} failed: {type(exc).__name__}: {exc}")
        conn.send(reply)
