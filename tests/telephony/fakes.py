"""Small stand-ins for the voice pipeline and the conversation core, for connector tests."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from gateway.core.actions import Action
from gateway.core.port import Opened


class FakeSession:
    """Records what the connector pushes; plays ``bot_audio`` then silence."""

    def __init__(self, call_id: str, sample_rate: int, **kwargs: Any):
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate // 50 * 2
        self.kwargs = kwargs
        self.conversation_id = kwargs.get("conversation_id") or str(uuid.uuid4())
        self.audio = bytearray()
        self.audio_pushes = 0
        self.dtmf: list[str] = []
        self.bot_audio = bytearray()
        self.started = False
        self.stopped: str | None = None
        self.pulls = 0
        self.ended = asyncio.Event()
        self.stopped_event = asyncio.Event()

    async def start(self) -> None:
        self.started = True

    def push_audio(self, pcm: bytes) -> None:
        self.audio += pcm
        self.audio_pushes += 1

    def push_dtmf(self, digit: str) -> None:
        self.dtmf.append(digit)

    def pull_frame(self) -> bytes:
        self.pulls += 1
        if self.bot_audio:
            frame = bytes(self.bot_audio[:self.frame_bytes]).ljust(self.frame_bytes, b"\x00")
            del self.bot_audio[:self.frame_bytes]
            return frame
        return bytes(self.frame_bytes)

    async def stop(self, reason: str = "hangup") -> None:
        self.stopped = reason
        self.stopped_event.set()


class FakePipeline:
    """``session()`` as in the voice contract; keeps every session it made."""

    def __init__(self, bot_audio: bytes = b""):
        self.sessions: list[FakeSession] = []
        self.bot_audio = bot_audio
        self.created = asyncio.Event()

    def session(self, *, call_id: str, sample_rate: int = 8000, **kwargs: Any) -> FakeSession:
        s = FakeSession(call_id, sample_rate, **kwargs)
        s.bot_audio += self.bot_audio
        self.sessions.append(s)
        self.created.set()
        return s

    def by_call(self, call_id: str) -> FakeSession:
        return next(s for s in self.sessions if s.call_id == call_id)


@dataclass
class ScriptedCore:
    """A tiny ConversationPort: answers events from a script of action lists."""

    script: list[list[Action]] = field(default_factory=list)
    greeting: list[Action] = field(default_factory=list)
    opened: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, Any]] = field(default_factory=list)
    sinks: dict[type, Any] = field(default_factory=dict)

    async def open(self, channel: str, **kwargs: Any) -> Opened:
        self.opened.append({"channel": channel, **kwargs})
        conv = kwargs.get("conversation_id") or str(uuid.uuid4())
        return Opened(conv, bool(kwargs.get("conversation_id")), list(self.greeting))

    async def handle(self, conversation_id: str, event: Any, *, session_id: str = "") -> list[Action]:
        self.events.append((conversation_id, event))
        return self.script.pop(0) if self.script else []

    async def context(self, conversation_id: str) -> dict[str, Any]:
        return {"conversation_id": conversation_id}

    def register_queue_probe(self, probe: object) -> None:
        """No queue is read here."""

    def register_sink(self, action_type: type, sink: Any) -> None:
        self.sinks[action_type] = sink
