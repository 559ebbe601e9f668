"""One conversation replayed from its event log: where it went, what it cost the customer, how it ended.

:func:`replay` reads the record and the log (customer events, the bot's actions, the core's
notes) once and returns a :class:`ConversationPath`, the unit every report and QA check counts.
Definitions (the README's analytics section repeats them):

- **ended**: closed or transferred, or its last customer event closed the channel, or nothing
  happened for ``analytics.idle_minutes``. Otherwise *active*.
- **outcome** of an ended conversation: ``transferred`` (a Transfer to an agent),
  ``completed`` (no transfer; an ``end:`` step hung up, or every task entered was completed),
  else ``abandoned``. *Contained* = ended without an agent (completed or abandoned).
- **turns**: customer inputs (an utterance, a message, a silence, a failed recognition, or one
  keyed entry however many keys). A **re-ask** is the same step asked again after an input;
  **no-match** / **no-input** are the retries the core logged as ``<step>.no_match`` /
  ``<step>.no_input``, plus the escalation that ended the retries.
- **keypad fallback**: a closed question (digits, yes/no, choice) asked on a call was answered
  by keys after a spoken answer was not taken. A recognizer that reports ``fallback: true`` on
  ``UserSaid`` (grammar answer after the cross-check) is counted the same way.
- **channel switches**: changes of the customer's channel between consecutive customer events.
- **latency**: ``core`` is the time from a customer event to the bot's first action, read from the
  log's timestamps; stage timings come from ``TurnTimed`` events (see :data:`STAGE_EVENT`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from gateway.analytics.journey_map import JourneyMap, StepRef
from gateway.context.store import ConversationRecord, LoggedEvent
from gateway.core.nlu.frustration import frustration_score

STAGE_EVENT = "TurnTimed"
"""The event a voice channel logs per turn with its stage timings: payload
``{"stages": {"endpoint_wait": s, "recognition": s, "dialog": s, "tts": s, "total": s}}``
(seconds; any subset). Numeric top-level fields of those names are read too."""
STAGES = ("endpoint_wait", "recognition", "dialog", "tts", "total")

INPUT_KINDS = frozenset({"UserSaid", "ChatMessage", "DtmfPressed", "Silence", "RecognitionFailed"})
CLOSED_EXPECT = frozenset({"digits", "yesno", "choice"})
NOT_CUSTOMER = frozenset({"bot", "system", "agent"})
FRUSTRATED = 0.5
"""A conversation whose most frustrated utterance scores this or more counts as frustrated."""


@dataclass
class StepStats:
    """What happened at one ask step of one conversation."""

    asks: int = 0
    inputs: int = 0
    re_asks: int = 0
    no_match: int = 0
    no_input: int = 0
    confidences: list[float] = field(default_factory=list)
    keypad_fallbacks: int = 0


@dataclass
class TaskOutcome:
    journey: str
    state: str = "entered"
    """entered (still going when the conversation ended: abandoned), completed, transferred, switched."""


@dataclass
class ConversationPath:
    conversation_id: str
    customer_id: str
    created_at: float
    last_at: float
    channels: list[str]
    ended: bool = False
    outcome: str = "active"
    tasks: list[TaskOutcome] = field(default_factory=list)
    visited: list[StepRef] = field(default_factory=list)
    steps: dict[StepRef, StepStats] = field(default_factory=dict)
    last_step: StepRef | None = None
    final_ask: StepRef | None = None
    """The question outstanding when the log ends: where an abandoned customer dropped off."""
    transfer_queue: str = ""
    transfer_reason: str = ""
    transfer_step: StepRef | None = None
    turns: int = 0
    channel_switches: int = 0
    frustration: list[tuple[float, float]] = field(default_factory=list)
    """(time, score) of each customer utterance."""
    latencies: dict[str, list[float]] = field(default_factory=dict)
    hangup_reason: str = ""

    @property
    def contained(self) -> bool:
        return self.ended and self.outcome != "transferred"

    @property
    def task_names(self) -> list[str]:
        return [t.journey for t in self.tasks]

    @property
    def queue(self) -> str:
        """The transfer's queue, else '' (the report falls back to the first task's queue)."""
        return self.transfer_queue

    @property
    def max_frustration(self) -> float:
        return max((s for _, s in self.frustration), default=0.0)

    def stats(self, ref: StepRef) -> StepStats:
        return self.steps.setdefault(ref, StepStats())


class _Replay:
    def __init__(self, record: ConversationRecord, jmap: JourneyMap) -> None:
        self.jmap = jmap
        self.path = ConversationPath(record.id, record.customer_id, record.created_at, record.created_at,
                                     [c for c in record.channels if c not in NOT_CUSTOMER])
        self.journey = ""
        self.ask: StepRef | None = None
        self.ask_closed = False
        self.inputs_since_ask: list[LoggedEvent] = []
        self.retry_kind = ""
        self.keys_pending = False
        self.spoke_at_ask = False
        self.last_channel = ""
        self.pending_input_at: float | None = None
        self.task: TaskOutcome | None = None

    # -- tasks ------------------------------------------------------------------------
    def _enter(self, ref: StepRef) -> None:
        path, jmap = self.path, self.jmap
        name = ref.journey
        if self.task is not None and self.task.state == "entered" and name != self.task.journey:
            if name in jmap.hands_over_to.get(self.task.journey, ()) or name == jmap.default_journey:
                self.task.state = "completed"
            elif name in jmap.tasks:
                self.task.state = "switched"
        if ref in jmap.end_steps and self.task is not None and self.task.state == "entered" \
                and name == self.task.journey:
            self.task.state = "completed"
        if name in jmap.tasks and (self.task is None or self.task.journey != name or self.task.state != "entered"):
            self.task = TaskOutcome(name)
            path.tasks.append(self.task)
        self.journey = name

    # -- events -----------------------------------------------------------------------
    def bot(self, event: LoggedEvent) -> None:
        path, payload = self.path, event.payload
        if self.pending_input_at is not None:
            path.latencies.setdefault("core", []).append(max(0.0, event.at - self.pending_input_at))
            self.pending_input_at = None
        if event.kind in ("Ask", "Say"):
            prompt_id = str(payload.get("prompt_id") or "")
            ref, retry = self.jmap.resolve(prompt_id, self.journey) if prompt_id else (None, "")
            if ref is not None:
                self._enter(ref)
                if not path.visited or path.visited[-1] != ref:
                    path.visited.append(ref)
                path.last_step = ref
            if retry and ref is not None:
                self.retry_kind = retry
            if event.kind == "Ask":
                self._asked(ref if ref is not None else self.ask, payload)
        elif event.kind == "Transfer":
            if not path.transfer_queue:
                path.transfer_queue = str(payload.get("queue", ""))
                path.transfer_reason = str(payload.get("reason", ""))
                path.transfer_step = self.ask
            at = self.ask
            if at is not None and self.inputs_since_ask:
                reason = str(payload.get("reason", ""))
                if reason == "repeated no-match":
                    path.stats(at).no_match += 1
                elif reason == "repeated no-input":
                    path.stats(at).no_input += 1
            if self.task is not None and self.task.state == "entered":
                self.task.state = "transferred"
        elif event.kind == "Hangup":
            path.hangup_reason = str(payload.get("reason", ""))
            if path.hangup_reason == "completed" and self.task is not None and self.task.state == "entered":
                self.task.state = "completed"

    def _asked(self, ref: StepRef | None, payload: dict[str, Any]) -> None:
        if ref is None:
            return  # a confirmation ("shall I ...?") belongs to the step before it
        stats = self.path.stats(ref)
        stats.asks += 1
        if ref == self.ask and self.inputs_since_ask:
            stats.re_asks += 1
            if self.retry_kind == "no_match":
                stats.no_match += 1
            elif self.retry_kind == "no_input":
                stats.no_input += 1
        elif self.ask is not None and self.ask != ref and self.ask_closed and self.spoke_at_ask and self.keys_pending:
            self.path.stats(self.ask).keypad_fallbacks += 1
        if ref != self.ask:
            self.spoke_at_ask = False
        self.ask = ref
        expect = payload.get("expect") or {}
        self.ask_closed = str(expect.get("kind", "open") if isinstance(expect, dict) else "open") in CLOSED_EXPECT
        self.inputs_since_ask = []
        self.retry_kind = ""
        self.keys_pending = False

    def customer(self, event: LoggedEvent) -> None:
        path, payload = self.path, event.payload
        if event.channel not in NOT_CUSTOMER:
            if self.last_channel and event.channel != self.last_channel:
                path.channel_switches += 1
            self.last_channel = event.channel
        if event.kind == STAGE_EVENT:
            stages = payload.get("stages") if isinstance(payload.get("stages"), dict) else payload
            for name in STAGES:
                value = stages.get(name)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    path.latencies.setdefault(name, []).append(float(value))
            return
        if event.kind not in INPUT_KINDS:
            return
        self.pending_input_at = event.at
        is_key = event.kind == "DtmfPressed"
        if not (is_key and self.keys_pending):
            path.turns += 1
        self.keys_pending = is_key
        if self.ask is not None:
            stats = path.stats(self.ask)
            if not is_key or len(self.inputs_since_ask) == 0 or self.inputs_since_ask[-1].kind != "DtmfPressed":
                stats.inputs += 1
            if event.kind == "UserSaid":
                self.spoke_at_ask = self.spoke_at_ask or event.channel == "voice"
                confidence = payload.get("confidence")
                if isinstance(confidence, (int, float)):
                    stats.confidences.append(float(confidence))
                if payload.get("fallback") is True:
                    stats.keypad_fallbacks += 1
        self.inputs_since_ask.append(event)
        if event.kind in ("UserSaid", "ChatMessage"):
            path.frustration.append((event.at, frustration_score(str(payload.get("text", "")))))


def replay(record: ConversationRecord, events: Iterable[LoggedEvent], jmap: JourneyMap, *, now: float,
           idle_seconds: float) -> ConversationPath:
    """The path of one conversation as its log tells it."""
    state = _Replay(record, jmap)
    last_customer_kind = ""
    for event in events:
        state.path.last_at = max(state.path.last_at, event.at)
        if event.channel == "bot":
            state.bot(event)
        elif event.channel != "system":
            state.customer(event)
            if event.kind != STAGE_EVENT:
                last_customer_kind = event.kind
    path = state.path
    path.final_ask = state.ask
    if not path.tasks:
        intent_task = jmap.task_of_intent.get(record.state.intent, "")
        if intent_task:
            path.tasks.append(TaskOutcome(intent_task, "transferred" if path.transfer_queue else "entered"))
    path.ended = (record.status in ("closed", "transferred") or last_customer_kind == "ChannelClosed"
                  or now - path.last_at >= idle_seconds)
    if not path.ended:
        return path
    if path.transfer_queue:
        path.outcome = "transferred"
    elif path.hangup_reason == "completed" or (path.tasks and all(t.state == "completed" for t in path.tasks)):
        path.outcome = "completed"
    else:
        path.outcome = "abandoned"
    return path
