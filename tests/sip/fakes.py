"""Stand-ins for the voice pipeline used by the SIP tests until (and besides) the real one.

``FakePipeline.session(...)`` returns a ``FakeSession`` with the voice port the SIP channel uses
(``gateway/voice/port.py``). Its bot audio depends on ``mode``: ``tone`` (a continuous 440 Hz tone,
so a caller can check for gaps), ``echo`` (the caller's audio back, 100 ms later) or ``silent``.
DTMF ``9`` asks its connector for a transfer (``TransferCall``); ``*`` hangs up (``HangUp``: the
gateway ends the call). With ``fail_first`` the first call's session breaks after one second
(``pull_frame`` raises).
"""

from __future__ import annotations

import asyncio
import collections
import math
from typing import Any, Callable

import numpy as np

from gateway.core.actions import Transfer
from gateway.voice.port import CallOpened, EventStream, HangUp, SessionEnded, SessionEvent, TransferCall

VOICED_RMS = 300.0


class FakeSession:
    def __init__(self, pipeline: "FakePipeline", *, call_id: str, sample_rate: int = 8000, caller_id: str = "",
                 dialed: str = "", conversation_id: str = "", outbound: bool = False,
                 channel: str = "voice", callback: str = "", attestation: str = "") -> None:
        self.pipeline = pipeline
        self.callback = callback  # what a real session hands the core when it opens
        self.attestation = attestation
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate // 50 * 2
        self.caller_id = caller_id
        self.dialed = dialed
        self.conversation_id = conversation_id or f"conv-{call_id[:8]}"
        self.outbound = outbound
        self.events = EventStream(call_id)
        self.frames_in = 0
        self.voiced_in = 0
        self.pulled = 0
        self.digits: list[str] = []
        self._phase = 0
        self._echo: collections.deque[bytes] = collections.deque(maxlen=500)

    @property
    def stats(self) -> dict[str, Any]:
        return {"frames_in": self.frames_in, "voiced_in": self.voiced_in, "pulled": self.pulled}

    async def start(self) -> None:
        self.pipeline.emit("session_started", call_id=self.call_id, rate=self.sample_rate,
                           caller_id=self.caller_id, dialed=self.dialed, outbound=self.outbound,
                           conversation_id=self.conversation_id, callback=self.callback)
        self.events.emit(CallOpened(self.conversation_id))
        if self.pipeline.end_after:
            asyncio.get_running_loop().call_later(self.pipeline.end_after, self.events.emit, HangUp("completed"))

    def push_audio(self, pcm: bytes) -> None:
        assert len(pcm) % 2 == 0
        self.frames_in += 1
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        if samples.size and math.sqrt(float(np.mean(samples * samples))) >= VOICED_RMS:
            self.voiced_in += 1
        if self.pipeline.mode == "echo":
            self._echo.append(pcm)

    def push_dtmf(self, digit: str) -> None:
        self.digits.append(digit)
        self.pipeline.emit("dtmf", call_id=self.call_id, digit=digit)
        if digit == "9":
            asyncio.ensure_future(self._transfer())
        elif digit == "*":
            self.events.emit(HangUp("completed"))

    async def _transfer(self) -> None:
        reply: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.events.emit(TransferCall(self.conversation_id, Transfer(queue="support"), reply))
        ok = await asyncio.wait_for(reply, 30)
        self.pipeline.emit("transfer", call_id=self.call_id, ok=ok)
        if ok:
            self.events.emit(HangUp("transferred"))

    def next_events(self) -> list[SessionEvent]:
        return self.events.drain()

    async def wait_events(self) -> list[SessionEvent]:
        return await self.events.wait()

    def pull_frame(self) -> bytes:
        self.pulled += 1
        if self.pipeline.fail_first and self is self.pipeline.sessions[0] and self.pulled > 50:
            raise RuntimeError("synthetic failure of one call's voice session")
        mode = self.pipeline.mode
        if mode == "tone":
            n = self.frame_bytes // 2
            t = (np.arange(n) + self._phase) / self.sample_rate
            self._phase += n
            return (np.sin(2 * np.pi * 440.0 * t) * 8000).astype("<i2").tobytes()
        if mode == "echo" and len(self._echo) > 5:
            return self._echo.popleft()
        return bytes(self.frame_bytes)

    async def stop(self, reason: str = "hangup") -> None:
        self.pipeline.emit("session_stopped", call_id=self.call_id, reason=reason, digits="".join(self.digits),
                           **self.stats)
        self.events.emit(SessionEnded(reason))


class FakePipeline:
    def __init__(self, emit: Callable[..., None], mode: str = "tone", end_after: float = 0.0,
                 fail_first: bool = False) -> None:
        self.emit = lambda event, **kw: emit(event, **kw)
        self.fail_first = fail_first
        self.mode = mode
        self.end_after = end_after
        self.sessions: list[FakeSession] = []

    def session(self, **kwargs: Any) -> FakeSession:
        session = FakeSession(self, **kwargs)
        self.sessions.append(session)
        return session


class FakeCore:
    """The smallest ConversationPort: records the sinks registered."""

    def __init__(self) -> None:
        self.sinks: dict[type, Any] = {}

    def register_queue_probe(self, probe: object) -> None:
        """No queue is read here."""

    def register_sink(self, action_type: type, sink: Any) -> None:
        self.sinks[action_type] = sink
