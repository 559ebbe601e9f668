"""Small stand-ins for the voice pipeline and the conversation core, for connector tests."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from gateway.core.actions import Action, Transfer
from gateway.core.port import Opened
from gateway.voice.port import CallOpened, ClearAudio, EventStream, HangUp, SessionEnded, SessionEvent, TransferCall


class FakeSession:
    """Records what the connector pushes; plays ``bot_audio`` then silence; emits the session
    events a test asks for (``hang_up``, ``cut``, ``request_transfer``) on the voice port."""

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
        self.events = EventStream(call_id)
        self.ended = asyncio.Event()
        self.stopped_event = asyncio.Event()

    async def start(self) -> None:
        self.started = True
        self.events.emit(CallOpened(self.conversation_id))

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

    def next_events(self) -> list[SessionEvent]:
        return self.events.drain()

    async def wait_events(self) -> list[SessionEvent]:
        return await self.events.wait()

    async def stop(self, reason: str = "hangup") -> None:
        self.stopped = reason
        self.stopped_event.set()
        self.events.emit(SessionEnded(reason))

    # -- what a test makes the session do ---------------------------------------------------
    def hang_up(self, reason: str = "completed") -> None:
        """The session is done with the call (a goodbye played, a transfer made)."""
        self.ended.set()
        self.events.emit(HangUp(reason))

    def cut(self, cause: str = "barge-in") -> None:
        """The caller cut the bot short."""
        self.events.emit(ClearAudio(cause))

    async def request_transfer(self, conversation_id: str, action: Transfer) -> bool:
        """Ask the connector to transfer the call; its answer."""
        reply: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.events.emit(TransferCall(conversation_id, action, reply))
        return await asyncio.wait_for(reply, 10)


class FakePipeline:
    """``session()`` as in the voice contract; keeps every session it made."""

    def __init__(self, bot_audio: bytes = b""):
        self.sessions: list[FakeSession] = []
        self.bot_audio = bot_audio
        self.created = asyncio.Event()
        self.calls = None  # no node-wide cap (VoicePipeline.calls): each server's own alone

    def session(self, *, call_id: str, sample_rate: int = 8000, admitted: bool = False, **kwargs: Any) -> FakeSession:
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
