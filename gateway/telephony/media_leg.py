"""The media leg: the lifecycle every telephony connector's call shares, written once.

A connector is its wire codec (sans-IO: bytes in, typed messages out) plus thin glue that feeds
its call's ``MediaLeg`` the caller's audio and keys and implements :class:`LegWire`: how bot
audio, a clear, a transfer and the end of the call go out on its wire. The leg does the rest:

- **hold** the caller's audio and keys until the session has started (bounded: the oldest audio
  goes first), then hand them over in order; a caller who leaves meanwhile still gets a session
  that is started, given what they said, and stopped;
- **flood limit**: a token bucket on caller audio. Audio may come in bursts (a network hiccup:
  up to ``FLOOD_BURST_SECONDS`` from a full bucket, as much again into debt) but not, on
  average, faster than ``FLOOD_SPEED`` times real time: a peer that floods audio would cost
  every call CPU (VAD);
- **the 20 ms tick** (one shared ``MediaPacer`` per server): the session's events are carried
  out first (opened, clear, transfer, hang up, ended; ``gateway/voice/port.py``), then the wire
  gets the tick's audio (``play(pull)``: silence while the session starts, so a PBX that hangs
  up on a silent line keeps the call). After a hang-up the wire may let the far end play what
  it buffers, up to the seconds its ``hanging_up`` returns (or until ``played_out``);
- **end once**: the wire closes its side, the session stops (after its start, when it is still
  starting) with the reason, one log line with the call id. A call the PBX has taken in a
  transfer ends as ``transferred`` whatever ends the leg first.

States (``LegState``) move only through ``TRANSITIONS``: ``NEW`` (no session yet) ->
``STARTING`` -> ``LIVE`` -> ``FINISHING`` -> ``ENDED``; any state may end.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Coroutine, Protocol

from gateway.core.actions import Transfer
from gateway.telephony.media_pacer import MediaPacer
from gateway.voice.port import (
    CallAudio,
    CallOpened,
    ClearAudio,
    HangUp,
    SessionEnded,
    SessionEvent,
    TransferCall,
)

log = logging.getLogger(__name__)

FLOOD_BURST_SECONDS = 3.0
FLOOD_SPEED = 4.0
"""Caller audio may arrive in bursts (up to 6 s at once: a full bucket of 3 s going 3 s into
debt) but not, on average, faster than four times real time."""
MAX_HELD_SECONDS = 16.0
"""Caller audio held while the conversation is being opened (it opens in well under a second)."""
MAX_HELD_KEYS = 32
"""Keys held while the conversation is being opened (a digit string is 32 at most)."""
START_TIMEOUT_SECONDS = 20.0
"""Opening the conversation and queueing the greeting; a stuck core ends that call only."""
STOP_TIMEOUT_SECONDS = 30.0
"""A session that does not stop within this is left behind (logged); the call is over anyway."""


class LegState(enum.Enum):
    NEW = "no session yet"
    STARTING = "the session is opening the conversation"
    LIVE = "audio both ways"
    FINISHING = "the session is done; the far end plays what it buffered"
    ENDED = "ended"


TRANSITIONS: dict[LegState, frozenset[LegState]] = {
    LegState.NEW: frozenset({LegState.STARTING, LegState.ENDED}),
    LegState.STARTING: frozenset({LegState.LIVE, LegState.ENDED}),
    LegState.LIVE: frozenset({LegState.FINISHING, LegState.ENDED}),
    LegState.FINISHING: frozenset({LegState.ENDED}),
    LegState.ENDED: frozenset(),
}
"""Every move a leg can make; any other is a bug (``LegStateError``)."""


class LegStateError(RuntimeError):
    """A move the transition table does not allow (a bug in a connector's glue)."""


@dataclass(frozen=True)
class LegEnd:
    """How a call ended: ``reason`` (``hangup``, ``timeout``, ``flood``, ``completed``, ...), and
    whether the session ended it (it hung up or transferred) rather than the far end or the gateway."""

    reason: str
    by_session: bool = False


class LegWire(Protocol):
    """What a connector's glue does for its media leg (the wire's side of each step)."""

    def play(self, pull: Callable[[], bytes]) -> None:
        """This tick's bot audio: ``pull()`` as many 20 ms frames as the wire takes (one, as a
        rule) and send them."""
        ...

    def clear(self) -> None:
        """The caller cut the bot short: drop the bot audio the far end still buffers."""
        ...

    def opened(self, conversation_id: str) -> None:
        """The conversation is open: tag the call with its id (start any I/O as a task)."""
        ...

    async def transfer(self, conversation_id: str, action: Transfer) -> bool:
        """Move the caller to people; True once the PBX has taken the call."""
        ...

    def hanging_up(self) -> float:
        """The session is done: how long the far end may play what it buffers before the call
        is ended (0: at once)."""
        ...

    def played_out(self) -> bool:
        """After ``hanging_up``: the far end says it has played everything (Twilio's mark)."""
        ...

    def close(self, end: LegEnd) -> None:
        """End the call on the wire, once (hang-up message, close the socket, BYE, ...)."""
        ...


Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]
"""The server's way to run a task it waits for when it closes."""


class MediaLeg:
    """One call's media leg (see the module docstring)."""

    def __init__(self, wire: LegWire, *, kind: str, call_id: str, pacer: MediaPacer, spawn: Spawn,
                 max_held_seconds: float = MAX_HELD_SECONDS, read_timeout: float | None = None) -> None:
        self.wire = wire
        self.kind = kind  # names the connector in log lines: "AudioSocket call <id> ..."
        self.call_id = call_id
        self.pacer = pacer
        self.spawn = spawn
        self.read_timeout = read_timeout
        self.state = LegState.NEW
        self.session: CallAudio | None = None
        self.conversation_id = ""
        self.outcome: LegEnd | None = None  # how the call ended, once it has
        self.stopped = asyncio.Event()
        self._max_held_seconds = max_held_seconds
        self._held_audio: deque[bytes] = deque()
        self._held_bytes = 0
        self._held_keys: list[str] = []
        self._silence = b""
        self._bytes_per_second = 0.0
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        self._heard = self._clock()
        self._credit = 0.0
        self._credit_time = self._heard
        self._deadline = 0.0
        self._ending: LegEnd | None = None
        self._transferred = False
        pacer.add(self)

    # -- connector side ----------------------------------------------------------------------
    def begin(self, session: CallAudio) -> None:
        """Start ``session`` for this call; caller input is held until it has started."""
        self._move(LegState.STARTING)
        self.session = session
        self._silence = bytes(session.frame_bytes)
        self._bytes_per_second = session.sample_rate * 2.0
        self._credit = FLOOD_BURST_SECONDS * self._bytes_per_second
        self._credit_time = self._clock()
        self.spawn(self._start(session))

    def heard(self) -> None:
        """Something arrived from the far end (for ``read_timeout``)."""
        self._heard = self._clock()

    def caller_audio(self, pcm: bytes) -> None:
        """Caller audio at the session's rate (16-bit mono PCM)."""
        if self.state is LegState.ENDED or not pcm:
            return
        self._heard = self._clock()
        if self._flooding(len(pcm)):
            log.warning("%s call %s: audio arrives much faster than real time; closing", self.kind, self.call_id)
            self.close("flood")
            return
        if self.state is LegState.LIVE or self.state is LegState.FINISHING:
            assert self.session is not None
            self.session.push_audio(pcm)
            return
        self._held_audio.append(pcm)
        self._held_bytes += len(pcm)
        limit = self._max_held_seconds * (self._bytes_per_second or 16000.0)
        while self._held_bytes > limit and self._held_audio:
            self._held_bytes -= len(self._held_audio.popleft())

    def caller_key(self, digit: str) -> None:
        """One DTMF key the caller pressed."""
        if self.state is LegState.ENDED or not digit:
            return
        if self.state is LegState.LIVE or self.state is LegState.FINISHING:
            assert self.session is not None
            self.session.push_dtmf(digit)
        elif len(self._held_keys) < MAX_HELD_KEYS:
            self._held_keys.append(digit)  # type-ahead while the greeting is being set up

    def close(self, reason: str) -> None:
        """End the call now (the far end left, its input was bad, the gateway shuts down)."""
        self._end(LegEnd(reason))

    # -- the 20 ms tick (MediaPacer) --------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Carry out the session's events, then send this tick's audio; end when due."""
        if self.state is LegState.ENDED:
            return
        if self.read_timeout is not None and now - self._heard > self.read_timeout:
            log.warning("%s call %s: nothing received for %.1f s; closing", self.kind, self.call_id,
                        self.read_timeout)
            self.close("timeout")
            return
        session = self.session
        if session is None:
            return
        if self.state is LegState.LIVE:
            self._carry_out(session.next_events(), now)
        if self.state is LegState.FINISHING:
            if self._ending is not None and (self.wire.played_out() or now >= self._deadline):
                self._end(self._ending)
            return
        if self.state is LegState.LIVE:
            self.wire.play(session.pull_frame)
        elif self.state is LegState.STARTING:
            self.wire.play(self._silent_frame)  # the conversation is being opened: keep the line alive

    def end(self, reason: str) -> None:
        """The shared pacer's way to end a call whose tick failed."""
        self.close(reason)

    # -- inside ------------------------------------------------------------------------------------
    def _move(self, target: LegState) -> None:
        if target not in TRANSITIONS[self.state]:
            raise LegStateError(f"{self.kind} call {self.call_id}: cannot go from {self.state.name} to {target.name}")
        self.state = target

    def _silent_frame(self) -> bytes:
        return self._silence

    def _flooding(self, nbytes: int) -> bool:
        """Token bucket: refilled at FLOOD_SPEED x real time, FLOOD_BURST_SECONDS deep."""
        rate = self._bytes_per_second
        if not rate:
            return False
        now = self._clock()
        cap = FLOOD_BURST_SECONDS * rate
        self._credit = min(cap, self._credit + (now - self._credit_time) * rate * FLOOD_SPEED)
        self._credit_time = now
        self._credit -= nbytes
        return self._credit < -cap

    async def _start(self, session: CallAudio) -> None:
        try:
            await asyncio.wait_for(session.start(), START_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - this call fails alone
            log.error("%s call %s: the voice session did not start (%s); closing", self.kind, self.call_id,
                      str(exc) or type(exc).__name__)
            self.close("error")
        else:
            if self.state is LegState.STARTING:
                self._move(LegState.LIVE)
            for pcm in self._held_audio:  # what the caller said while the conversation was opened
                session.push_audio(pcm)
            for key in self._held_keys:
                session.push_dtmf(key)
            self._carry_out(session.next_events(), self._clock())
        self._held_audio.clear()
        self._held_bytes = 0
        self._held_keys.clear()
        if self.state is LegState.ENDED:
            await self._stop(session)  # ended while starting: stopped now that it has started

    def _carry_out(self, events: list[SessionEvent], now: float) -> None:
        for event in events:
            if isinstance(event, CallOpened):
                self.conversation_id = event.conversation_id
                self.wire.opened(event.conversation_id)
            elif isinstance(event, ClearAudio):
                if self.state is LegState.LIVE:
                    self.wire.clear()
            elif isinstance(event, TransferCall):
                if self.state is LegState.LIVE:
                    self.spawn(self._transfer(event))
                else:
                    event.answer(False)
            elif isinstance(event, HangUp):
                self._hang_up(LegEnd(event.reason, by_session=True), now)
            elif isinstance(event, SessionEnded):
                self._end(LegEnd(event.reason, by_session=True))

    async def _transfer(self, event: TransferCall) -> None:
        try:
            ok = await self.wire.transfer(event.conversation_id, event.action)
        except Exception as exc:  # noqa: BLE001 - a failed transfer is an answer, not a crash
            log.warning("%s call %s: transfer failed: %s", self.kind, self.call_id, exc)
            ok = False
        self._transferred = self._transferred or ok
        event.answer(ok)

    def _hang_up(self, end: LegEnd, now: float) -> None:
        if self.state is not LegState.LIVE:
            return
        self._move(LegState.FINISHING)
        self._ending = end
        self._deadline = now + max(0.0, self.wire.hanging_up())
        if now >= self._deadline:
            self._end(end)

    def _end(self, end: LegEnd) -> None:
        if self.state is LegState.ENDED:
            return
        if self._transferred and not end.by_session:
            # the PBX took the call: it often drops this leg before the session has said it is
            # done (a StasisEnd, a closed AudioSocket); the call still ended as a transfer
            end = LegEnd("transferred", by_session=True)
        starting = self.state is LegState.STARTING
        self._move(LegState.ENDED)
        self.outcome = end
        self.pacer.discard(self)
        try:
            self.wire.close(end)
        except Exception:  # noqa: BLE001 - the session still stops
            log.exception("%s call %s: closing the wire failed", self.kind, self.call_id)
        log.info("%s call %s ended: %s", self.kind, self.call_id, end.reason)
        if self.session is None:
            self.stopped.set()
        elif not starting:
            self.spawn(self._stop(self.session))

    async def _stop(self, session: CallAudio) -> None:
        assert self.outcome is not None
        try:
            await asyncio.wait_for(session.stop(self.outcome.reason), STOP_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001 - the call is over either way
            log.exception("%s call %s: session stop failed", self.kind, self.call_id)
        finally:
            self.stopped.set()
