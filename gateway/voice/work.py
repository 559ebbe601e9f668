"""A call's queued work: what its one worker task does next, one frozen dataclass per kind.

The per-frame path (VAD, endpointing, keys) never waits: it queues a work item and returns, and
the session's worker (``VoiceSession._work``) takes them in order, so the core sees a call's
events in the order they happened:

- :class:`PerformActions`: speak and carry out the core's actions (the greeting, an answer, a
  supervisor's delivery), with the turn timer of the turn they answer;
- :class:`CallerTurn`: a caller utterance whose recognition is scheduled: its transcript goes
  to the core as ``UserSaid`` (or ``RecognitionFailed``);
- :class:`NoInputElapsed`: the caller said nothing for ``seconds`` after a prompt (``Silence``);
- :class:`KeysEntered`: DTMF keys, sent one ``DtmfPressed`` each;
- :class:`LogTurnTiming`: one turn's stage split for the conversation's event log;
- :class:`~gateway.voice.answering.Answered`: who answered a call the gateway placed;
- :class:`TransferNotTaken`: the connector could not move the call to people (``TransferFailed``);
- :class:`Failure`: something failed outside the worker: it ends the call (with an apology).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from gateway.core.actions import Action
from gateway.voice.answering import Answered
from gateway.voice.turns import TurnTimer

if TYPE_CHECKING:
    from gateway.voice.caller_turns import Utterance


@dataclass(frozen=True)
class PerformActions:
    actions: tuple[Action, ...]
    timer: TurnTimer | None = None


@dataclass(frozen=True)
class CallerTurn:
    utterance: Utterance


@dataclass(frozen=True)
class NoInputElapsed:
    seconds: float


@dataclass(frozen=True)
class KeysEntered:
    digits: tuple[str, ...]


@dataclass(frozen=True)
class LogTurnTiming:
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class TransferNotTaken:
    queue: str
    detail: str


@dataclass(frozen=True)
class Failure:
    error: BaseException


WorkItem = (PerformActions | CallerTurn | NoInputElapsed | KeysEntered | LogTurnTiming | Answered | TransferNotTaken
            | Failure)
