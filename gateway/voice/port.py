"""The voice port: what a call's connector and its voice session say to each other.

Connector -> session (:class:`CallAudio`): ``start()`` opens the conversation; ``push_audio(pcm)``
and ``push_dtmf(key)`` give it the caller's audio and keys; ``pull_frame()`` takes exactly the
next 20 ms of the bot's audio (silence when there is none; it never blocks), once per tick;
``stop(reason)`` ends it once the far end has gone.

Session -> connector: a typed stream of :data:`SessionEvent`, drained by the connector with
``next_events()`` at its tick (or awaited with ``wait_events()`` where no tick runs):

- :class:`CallOpened`: the conversation is open (tag the channel with its id, tell the PBX);
- :class:`ClearAudio`: the caller cut the bot short (speech over it, a key): drop the bot audio
  the far end still buffers (Twilio's ``clear``, SIP's send queue) at once;
- :class:`TransferCall`: move the caller to people; the connector answers ``answer(True)``
  once the PBX has taken the call, ``answer(False)`` when it could not;
- :class:`HangUp`: the session is done with the call (``completed``, ``transferred``,
  ``error``, ...): let the far end play what it buffers, then end the call the connector's way
  (a transferred call is handed on, not dropped);
- :class:`SessionEnded`: the session has stopped (its last event: after ``stop`` or a shutdown).

The session never calls into its connector: it only emits these events. A connector is its
wire codec plus ``gateway/telephony/media_leg.py``, which turns them into the wire's messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from gateway.core.actions import Transfer

log = logging.getLogger(__name__)

MAX_PENDING_EVENTS = 256
"""Events kept for a connector that has not drained them (a call has a handful; one cut per
barge-in): past it the oldest are dropped, so a connector that never reads cannot grow memory."""


@dataclass(frozen=True)
class CallOpened:
    """The conversation is open (new or resumed) under ``conversation_id``."""

    conversation_id: str
    resumed: bool = False


@dataclass(frozen=True)
class ClearAudio:
    """The caller cut the bot short (``cause``: ``barge-in``, ``key``, or ``superseded``: an answer held
    while the caller spoke on, replaced by their new turn): drop buffered bot audio."""

    cause: str


@dataclass(frozen=True)
class TransferCall:
    """Move the caller to people (``action``: queue, skills, language); answer with the outcome."""

    conversation_id: str
    action: Transfer
    reply: asyncio.Future[bool] = field(compare=False, repr=False)

    def answer(self, ok: bool) -> None:
        """The connector's outcome: True once the PBX has taken the call."""
        if not self.reply.done():
            self.reply.set_result(ok)


@dataclass(frozen=True)
class HangUp:
    """The session is done with the call (``reason``: completed, transferred, error, ...)."""

    reason: str


@dataclass(frozen=True)
class SessionEnded:
    """The session has stopped; nothing follows."""

    reason: str


SessionEvent = CallOpened | ClearAudio | TransferCall | HangUp | SessionEnded


class CallAudio(Protocol):
    """One call's voice session as its connector sees it."""

    call_id: str
    sample_rate: int
    frame_bytes: int

    async def start(self) -> None:
        """Open (or resume) the conversation; ``CallOpened`` follows on the event stream."""
        ...

    def push_audio(self, pcm: bytes) -> None:
        """Caller audio (16-bit mono PCM at ``sample_rate``), any length."""
        ...

    def push_dtmf(self, digit: str) -> None:
        """One key the caller pressed (``0``-``9``, ``*``, ``#``, ``A``-``D``)."""
        ...

    def pull_frame(self) -> bytes:
        """Exactly the next 20 ms of bot audio (``frame_bytes``); silence when there is none."""
        ...

    def next_events(self) -> list[SessionEvent]:
        """The session's events since the last call, in order (never blocks)."""
        ...

    async def wait_events(self) -> list[SessionEvent]:
        """The session's next events, waiting for at least one."""
        ...

    async def stop(self, reason: str = "hangup") -> None:
        """The far end went away (or the gateway ends the call): stop, once."""
        ...


class CallsFull(RuntimeError):
    """The node holds ``voice.max_calls`` calls (``VoicePipeline.calls``): no session for one more."""


class VoiceSessions(Protocol):
    """Where a connector gets a session for each call (the voice pipeline)."""

    def session(self, *, call_id: str, sample_rate: int = 8000, caller_id: str = "", dialed: str = "",
                conversation_id: str = "", outbound: bool = False, channel: str = "voice", callback: str = "",
                attestation: str = "", admitted: bool = False) -> CallAudio:
        """A new call's session (``await session.start()`` opens the conversation); ``CallsFull``
        when the node holds its most calls (``admitted``: the server took the call's slot itself)."""
        ...


class EventStream:
    """The session's end of the event stream: ``emit``; the connector's: ``drain``/``wait``."""

    def __init__(self, call_id: str, limit: int = MAX_PENDING_EVENTS) -> None:
        self.call_id = call_id
        self._events: deque[SessionEvent] = deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self.dropped = 0

    def emit(self, event: SessionEvent) -> None:
        if len(self._events) >= self._limit:
            self._events.popleft()
            self.dropped += 1
            if self.dropped == 1:
                log.warning("call %s: its connector does not read the session's events; dropping the oldest",
                            self.call_id)
        self._events.append(event)
        self._ready.set()

    def drain(self) -> list[SessionEvent]:
        events = list(self._events)
        self._events.clear()
        self._ready.clear()
        return events

    async def wait(self) -> list[SessionEvent]:
        while not self._events:
            await self._ready.wait()
            self._ready.clear()
        return self.drain()


class CallControl(Protocol):
    """A call's transfer and hang-up done the connector's way (AMI Redirect, SIP REFER, ...)."""

    async def transfer(self, conversation_id: str, action: Transfer) -> bool: ...

    async def hangup(self, reason: str) -> None: ...


async def carry_out(call: CallAudio, control: CallControl) -> None:
    """Carry out a session's transfers and hang-ups with ``control`` until it has ended: the
    event loop of a call that has no media leg (``voicegw simulate``, tests)."""
    while True:
        for event in await call.wait_events():
            if isinstance(event, TransferCall):
                try:
                    ok = await control.transfer(event.conversation_id, event.action)
                except Exception as exc:  # noqa: BLE001 - a failed transfer is an answer, not a crash
                    log.warning("call %s: transfer failed: %s", call.call_id, exc)
                    ok = False
                event.answer(ok)
            elif isinstance(event, HangUp) and event.reason != "transferred":
                await control.hangup(event.reason)
            elif isinstance(event, SessionEnded):
                return
