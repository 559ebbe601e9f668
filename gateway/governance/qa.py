"""QA on every ended conversation: a scorecard's checks run over the record and its event log.

Each check answers ``pass``, ``fail`` or ``n/a`` (nothing to judge) with a detail a reviewer
reads; details name steps, channels and event numbers, never what the customer said. The
score is the passed share of the applicable weight; a conversation passes when the score
reaches the card's ``pass_score`` and no critical item failed. A reviewer's override replaces
an item's status (and is kept beside the automatic one).

Checks:

- ``automation_disclosed``: one of the bot's first ``within_first`` utterances names it as
  automated (``phrases``).
- ``identity_before_disclosure``: every utterance of a step of a journey that ``requires`` a
  level (account data) went to a channel where that level was proven before it: a grant in the
  trust ledger on that channel, a ``proof_steps`` step said on it, or a callback answered on it.
- ``no_unredacted_pii``: the redactor, every kind on, finds nothing left in the event log or the
  record's slots and state.
- ``resolution_or_handoff``: completed, or transferred cleanly (the customer was told, the
  transfer names a queue and a reason, the agent got the screen-pop).
- ``escalation_within``: no question failed (no-match, no-input) more than ``max_failed_turns``
  times without the conversation going to an agent.
- ``courtesy_close``: when the bot ended the conversation or handed it over, its last words
  before doing so were courteous (``phrases``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

from gateway.analytics.journey_map import JourneyMap
from gateway.analytics.path import NOT_CUSTOMER, ConversationPath
from gateway.context.redaction import Redactor
from gateway.context.store import ConversationRecord, LoggedEvent
from gateway.core.trust import REQUIREMENTS, Assurance
from gateway.governance.scorecards import Item, Scorecard

Status = Literal["pass", "fail", "n/a"]
SPOKEN = ("Say", "Ask")


@dataclass(frozen=True)
class ItemResult:
    id: str
    status: Status
    detail: str
    weight: float
    critical: bool


@dataclass
class QaResult:
    conversation_id: str
    scorecard: str
    version: int
    evaluated_at: float
    ended_at: float
    outcome: str
    journeys: list[str]
    channels: list[str]
    items: list[dict[str, Any]] = field(default_factory=list)
    """Item results as dicts; an override adds ``override: {status, by, comment, at}``."""
    pass_score: float = 0.8

    def status_of(self, item: dict[str, Any]) -> str:
        override = item.get("override")
        return str(override["status"]) if override else str(item["status"])

    @property
    def score(self) -> float | None:
        applicable = [i for i in self.items if self.status_of(i) != "n/a"]
        total = sum(float(i["weight"]) for i in applicable)
        if not total:
            return None
        return sum(float(i["weight"]) for i in applicable if self.status_of(i) == "pass") / total

    @property
    def passed(self) -> bool:
        if any(i["critical"] and self.status_of(i) == "fail" for i in self.items):
            return False
        score = self.score
        return score is None or score >= self.pass_score

    @property
    def failing(self) -> list[dict[str, Any]]:
        return [i for i in self.items if self.status_of(i) == "fail"]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["score"], data["passed"] = self.score, self.passed
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QaResult":
        fields = {k: data[k] for k in ("conversation_id", "scorecard", "version", "evaluated_at", "ended_at",
                                       "outcome", "journeys", "channels", "items", "pass_score")}
        return cls(**fields)


def applies(card: Scorecard, path: ConversationPath) -> bool:
    if card.journeys and not set(card.journeys) & set(path.task_names):
        return False
    return not card.channels or bool(set(card.channels) & set(path.channels))


def evaluate(card: Scorecard, record: ConversationRecord, events: Sequence[LoggedEvent], path: ConversationPath,
             jmap: JourneyMap, *, now: float) -> QaResult:
    checker = _Checks(record, list(events), path, jmap)
    items = []
    for item in card.items:
        status, detail = getattr(checker, item.check)(item)
        items.append(asdict(ItemResult(item.id, status, detail, item.weight, item.critical)))
    return QaResult(record.id, card.scorecard, record.version, now, path.last_at, path.outcome, path.task_names,
                    path.channels, items, card.pass_score)


def _has(text: str, phrases: Sequence[str]) -> bool:
    low = text.lower()
    return any(p.lower() in low for p in phrases)


class _Checks:
    def __init__(self, record: ConversationRecord, events: list[LoggedEvent], path: ConversationPath,
                 jmap: JourneyMap) -> None:
        self.record, self.events, self.path, self.jmap = record, events, path, jmap

    def automation_disclosed(self, item: Item) -> tuple[Status, str]:
        said = [e for e in self.events if e.channel == "bot" and e.kind in SPOKEN][: item.within_first]
        if not said:
            return "n/a", "the bot said nothing"
        if any(_has(str(e.payload.get("text", "")), item.phrases) for e in said):
            return "pass", "disclosed"
        return "fail", f"none of the bot's first {len(said)} utterances (events {', '.join(str(e.seq) for e in said)})" \
                       " says it is automated"

    def _proofs(self, item: Item) -> list[tuple[str, Assurance, float]]:
        """(channel, level, time) of everything that proved a level on a channel."""
        proofs = []
        for grant in dict(self.record.trust.get("grants", {})).values():
            try:
                level = Assurance[str(grant["level"]).upper()]
                proofs.append((str(grant.get("channel", "")), level, float(grant["at"])))
            except (KeyError, ValueError, TypeError):
                continue
        steps = {ref: REQUIREMENTS.get(level, Assurance.NONE) for level, refs in item.proof_steps.items()
                 for ref in refs}
        channel = ""
        for e in self.events:
            if e.channel not in NOT_CUSTOMER:
                channel = e.channel
            elif e.channel == "bot" and e.kind in SPOKEN and e.payload.get("prompt_id"):
                ref, _ = self.jmap.resolve(str(e.payload["prompt_id"]), "")
                for name in self.jmap.journeys_of_step.get(ref.step, ()) if ref else ():
                    level = steps.get(f"{name}.{ref.step}") if ref else None
                    if level:
                        proofs.append((channel, level, e.at))
            elif e.channel == "system" and e.kind == "CallbackAnswered":
                level = Assurance.__members__.get(str(e.payload.get("level", "")).upper(), Assurance.NONE)
                proofs.append((str(e.payload.get("channel", channel)), level, e.at))
        return proofs

    def identity_before_disclosure(self, item: Item) -> tuple[Status, str]:
        proofs = self._proofs(item)
        channel, journey, disclosures, bad = "", "", 0, []
        for e in self.events:
            if e.channel not in NOT_CUSTOMER:
                channel = e.channel
                continue
            if e.channel != "bot" or e.kind not in SPOKEN or not e.payload.get("prompt_id"):
                continue
            ref, _ = self.jmap.resolve(str(e.payload["prompt_id"]), journey)
            if ref is None:
                continue
            journey = ref.journey
            need = REQUIREMENTS.get(self.jmap.requires.get(ref.journey, ""), Assurance.NONE)
            if need == Assurance.NONE:
                continue
            disclosures += 1
            if not any(c == channel and level >= need and at <= e.at for c, level, at in proofs):
                bad.append(f"event {e.seq} ({ref.journey}.{ref.step} on {channel or 'an unknown channel'})")
        if not disclosures:
            return "n/a", "no account data was disclosed"
        if bad:
            return "fail", "account data before the channel proved enough: " + ", ".join(bad[:5])
        return "pass", f"{disclosures} disclosure(s), each after a proof on its channel"

    def no_unredacted_pii(self, item: Item) -> tuple[Status, str]:
        redactor = Redactor()  # every kind on, whatever the site switched off
        found = [str(e.seq) for e in self.events if redactor.redact_payload(dict(e.payload)) != e.payload]
        record_dirty = (redactor.redact_payload(dict(self.record.slots)) != self.record.slots
                        or redactor.redact_payload(self.record.state.to_dict()) != self.record.state.to_dict())
        if not found and not record_dirty:
            return "pass", "nothing left to mask"
        where = ([f"events {', '.join(found[:10])}"] if found else []) + (["the record"] if record_dirty else [])
        return "fail", "unmasked secrets in " + " and ".join(where)

    def resolution_or_handoff(self, item: Item) -> tuple[Status, str]:
        path = self.path
        if path.outcome == "completed":
            return "pass", "completed"
        if path.outcome != "transferred":
            return ("fail", "ended without a resolution or a handoff") if path.ended else ("n/a", "still going")
        index = next(i for i, e in enumerate(self.events) if e.channel == "bot" and e.kind == "Transfer")
        transfer = self.events[index]
        told = index > 0 and self.events[index - 1].channel == "bot" and self.events[index - 1].kind == "Say"
        popped = any(e.kind == "ScreenPop" for e in self.events[index:])
        missing = [what for what, ok in (("the customer was not told", told),
                                         ("no queue", bool(transfer.payload.get("queue"))),
                                         ("no reason", bool(transfer.payload.get("reason"))),
                                         ("no screen-pop for the agent", popped)) if not ok]
        return ("fail", "handoff: " + ", ".join(missing)) if missing else ("pass", "clean handoff")

    def escalation_within(self, item: Item) -> tuple[Status, str]:
        failed = {ref: s.no_match + s.no_input for ref, s in self.path.steps.items() if s.no_match + s.no_input}
        if not failed:
            return "n/a", "no failed turn"
        worst = max(failed, key=lambda r: failed[r])
        if failed[worst] > item.max_failed_turns:
            return "fail", (f"{worst.journey}.{worst.step} failed {failed[worst]} times "
                            f"(more than {item.max_failed_turns}) before any agent")
        return "pass", f"at most {failed[worst]} failed turn(s) at one question"

    def courtesy_close(self, item: Item) -> tuple[Status, str]:
        end = next((i for i, e in enumerate(self.events) if e.channel == "bot" and e.kind in ("Hangup", "Transfer")),
                   None)
        if end is None:
            return "n/a", "the customer ended it"
        last = next((e for e in reversed(self.events[:end]) if e.channel == "bot" and e.kind in SPOKEN), None)
        if last is not None and _has(str(last.payload.get("text", "")), item.phrases):
            return "pass", "courteous close"
        return "fail", f"the bot's last words before {self.events[end].kind.lower()} were not a courteous close"
