"""What the core keeps per conversation between turns, as one typed value: :class:`DialogState`.

It lives in ``ConversationRecord.state`` and is stored by both context stores as plain JSON with
one key per field (``stack``, ``history``, ``retries``...), the same keys the core wrote before
the state had a type. :meth:`DialogState.from_dict` reads both: a record stored the old way loads
as it was (a frame as a ``[journey, step]`` pair, retries as ``{"no_match": 1}``, the handoff as
its dict), a value of the wrong shape falls back to its default with a warning instead of making
the record unreadable, and keys it does not know (written by a newer node during an upgrade) are
kept in ``extra`` and written back unchanged. Defaults are not written, so a fresh conversation's
state is ``{}`` in the store.

What a *session* proved is not here: that is the trust ledger (``record.trust``,
:mod:`gateway.core.trust`), kept apart so that nothing in the dialog can grant it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping

from gateway.core.handoff import Handoff

log = logging.getLogger(__name__)

RETIRED_KEYS = frozenset({"last_text"})
"""Keys older versions kept in the state and this one drops on load: the raw text of the last
utterance is the turn's (``Turn.text``), never persisted."""
REPORTED_FIELDS = ("intent", "transfer", "frustration", "agent")
"""What a slots purge keeps (retention): no personal data, and the reports read them."""


@dataclass(frozen=True)
class Frame:
    """A place in a journey: where a sub-journey returns to, or a step answered (``go back``)."""

    journey: str
    step: str

    def as_json(self) -> list[str]:
        return [self.journey, self.step]

    @classmethod
    def from_json(cls, raw: Any) -> "Frame":
        journey, step = raw  # a [journey, step] pair, as the store has always kept it
        return cls(str(journey), str(step or ""))


@dataclass(frozen=True)
class Retries:
    """How often the current step got no answer and no usable answer (reset on every answer)."""

    no_input: int = 0
    no_match: int = 0

    def count(self, kind: str) -> int:
        return self.no_input if kind == "no_input" else self.no_match

    def bumped(self, kind: str) -> "Retries":
        if kind == "no_input":
            return replace(self, no_input=self.no_input + 1)
        return replace(self, no_match=self.no_match + 1)

    def as_json(self) -> dict[str, int]:
        return {k: v for k, v in (("no_input", self.no_input), ("no_match", self.no_match)) if v}

    @classmethod
    def from_json(cls, raw: Any) -> "Retries":
        data = dict(raw)
        return cls(int(data.get("no_input", 0)), int(data.get("no_match", 0)))


@dataclass(frozen=True)
class StepUp:
    """A party sent through an identity check before going on: its session, and the place kept
    for after the check (also on the stack)."""

    session: str
    frame: Frame

    def as_json(self) -> dict[str, Any]:
        return {"session": self.session, "frame": self.frame.as_json()}

    @classmethod
    def from_json(cls, raw: Any) -> "StepUp":
        return cls(str(raw.get("session", "")), Frame.from_json(raw["frame"]))


@dataclass(frozen=True)
class Transferred:
    """The last hand-over to people: the queue, why, when, and the customer's channel then."""

    queue: str
    reason: str
    at: float
    channel: str

    def as_json(self) -> dict[str, Any]:
        return {"queue": self.queue, "reason": self.reason, "at": self.at, "channel": self.channel}

    @classmethod
    def from_json(cls, raw: Any) -> "Transferred":
        return cls(str(raw.get("queue", "")), str(raw.get("reason", "")), float(raw.get("at", 0.0)),
                   str(raw.get("channel", "")))


@dataclass(frozen=True)
class PendingTransfer:
    """A hand-over put off while the customer chooses (a long queue: a callback, a text or the
    wait, ``config/journeys/long_wait.yaml``): where it was going and why."""

    queue: str
    skills: tuple[str, ...] = ()
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"queue": self.queue, "skills": list(self.skills), "reason": self.reason}

    @classmethod
    def from_json(cls, raw: Any) -> "PendingTransfer":
        return cls(str(raw.get("queue", "")), tuple(str(s) for s in raw.get("skills", ())), str(raw.get("reason", "")))


@dataclass
class DialogState:
    """The dialog's working state of one conversation. Mutable like the record it belongs to:
    the engine edits it during a turn and the orchestrator saves the record."""

    stack: list[Frame] = field(default_factory=list)
    """Places to return to: the journey a sub-journey (``call:``) or a check interrupted."""
    history: list[Frame] = field(default_factory=list)
    """Steps answered, oldest first (``go back`` pops the last)."""
    retries: Retries = field(default_factory=Retries)
    confirming: str = ""
    """The step whose answer waits for a yes/no confirmation ('' when none)."""
    step_up: StepUp | None = None
    """A party sent through a check (see :meth:`DialogEngine._gate`)."""
    pending_dtmf: str = ""
    """Keys of a non-sensitive digit entry so far (sensitive ones stay in memory, never here)."""
    pending_journey: str = ""
    """The journey a conversation opened by the dialer starts once its call is answered."""
    intent: str = ""
    """The last intent that started a journey (reports, screen-pop)."""
    frustration: float = 0.0
    """The highest frustration heard so far, 0..1."""
    forms: list[str] = field(default_factory=list)
    """Purposes of the link forms the customer completed."""
    verify_failures: int = 0
    """Failed identity checks in this conversation (the per-customer lock is in the counters)."""
    transfer: Transferred | None = None
    agent: str = ""
    """The agent who last took the conversation."""
    transfer_failures: int = 0
    """Hand-overs to people the telephony side could not carry out (the call stayed with the bot)."""
    handoff: Handoff = field(default_factory=Handoff)
    """Where it stands with the people around the bot (:mod:`gateway.core.handoff`)."""
    outbound_sessions: list[str] = field(default_factory=list)
    """Sessions that are calls (or threads) the gateway placed itself (the opt-out key)."""
    pending_transfer: PendingTransfer | None = None
    """The hand-over a long queue put off while the customer chooses (``long_wait``)."""
    callback_for_agent: PendingTransfer | None = None
    """The customer booked a callback instead of waiting: the next call the gateway places goes
    straight to this queue once answered."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept as they were read and written back unchanged."""

    # ---------------------------------------------------------------- the stored form
    def to_dict(self) -> dict[str, Any]:
        """The JSON the stores keep: one key per field that is not at its default."""
        out: dict[str, Any] = dict(self.extra)
        for name, encode in _CODECS.items():
            value = getattr(self, name)
            if value != _DEFAULTS[name]:
                out[name] = encode[0](value)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, *, where: str = "") -> "DialogState":
        """Read a stored state (any version: see the module doc); never raises on its content."""
        state = cls()
        if not isinstance(raw, Mapping):
            if raw:
                log.warning("%s: dialog state of type %s dropped", where or "a record", type(raw).__name__)
            return state
        for key, value in raw.items():
            if key in RETIRED_KEYS:
                continue
            codec = _CODECS.get(key)
            if codec is None:
                state.extra[key] = value
                continue
            try:
                setattr(state, key, codec[1](value))
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                log.warning("%s: dialog state %r unreadable (%s); reset", where or "a record", key, exc)
        return state

    def purged(self) -> "DialogState":
        """What a slots purge keeps (:data:`REPORTED_FIELDS`): the rest may hold personal data."""
        return DialogState(**{name: getattr(self, name) for name in REPORTED_FIELDS})

    # ---------------------------------------------------------------- small helpers the engine uses
    def push(self, journey: str, step: str | None) -> Frame:
        frame = Frame(journey, step or "")
        self.stack.append(frame)
        return frame

    def answered(self, journey: str, step: str) -> None:
        self.history.append(Frame(journey, step))

    def heard_frustration(self, score: float) -> None:
        self.frustration = max(self.frustration, float(score))


def _list_of(decode: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def read(raw: Any) -> list[Any]:
        if not isinstance(raw, list):
            raise TypeError(f"expected a list, got {type(raw).__name__}")
        return [decode(item) for item in raw]
    return read


def _optional(decode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda raw: decode(raw) if raw else None


def _dict(decode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def read(raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            raise TypeError(f"expected a mapping, got {type(raw).__name__}")
        return decode(raw)
    return read


_CODECS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "stack": (lambda v: [f.as_json() for f in v], _list_of(Frame.from_json)),
    "history": (lambda v: [f.as_json() for f in v], _list_of(Frame.from_json)),
    "retries": (Retries.as_json, _dict(Retries.from_json)),
    "confirming": (str, lambda raw: str(raw or "")),
    "step_up": (lambda v: v.as_json(), _optional(_dict(StepUp.from_json))),
    "pending_dtmf": (str, lambda raw: str(raw or "")),
    "pending_journey": (str, lambda raw: str(raw or "")),
    "intent": (str, lambda raw: str(raw or "")),
    "frustration": (float, lambda raw: float(raw or 0.0)),
    "forms": (list, _list_of(str)),
    "verify_failures": (int, lambda raw: int(raw or 0)),
    "transfer": (lambda v: v.as_json(), _optional(_dict(Transferred.from_json))),
    "agent": (str, lambda raw: str(raw or "")),
    "transfer_failures": (int, lambda raw: int(raw or 0)),
    "handoff": (Handoff.as_json, _dict(Handoff.from_json)),
    "outbound_sessions": (list, _list_of(str)),
    "pending_transfer": (lambda v: v.as_json(), _optional(_dict(PendingTransfer.from_json))),
    "callback_for_agent": (lambda v: v.as_json(), _optional(_dict(PendingTransfer.from_json))),
}
"""(encode, decode) per stored field; ``extra`` is not one of them (it is merged as it is)."""
_DEFAULTS: dict[str, Any] = {f.name: getattr(DialogState(), f.name) for f in fields(DialogState)}
assert set(_CODECS) == set(_DEFAULTS) - {"extra"}, "every DialogState field needs a codec"
