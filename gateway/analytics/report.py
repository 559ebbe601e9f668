"""Journey analytics: conversation paths counted into the report's tables.

:func:`build_report` takes the paths of the conversations *started* in the range (already
replayed), the start times of every conversation of the same customers up to the repeat-contact
window after the range, and a :class:`ReportFilter`; it returns a :class:`Report` whose tables
the dashboard draws, ``voicegw report`` prints and the exports write.

Rates are fractions of *ended* conversations (an active one has no outcome yet). A repeat
contact is a conversation of the same customer started after this one and no later than
``analytics.repeat_contact_days`` after its last event; first-contact resolution is the share
of ended conversations of known customers without one.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from gateway.analytics.journey_map import JourneyMap, StepRef
from gateway.analytics.path import FRUSTRATED, STAGES, ConversationPath
from gateway.analytics.tables import Table, table

DAY = 86400.0
HOURLY_UP_TO_SECONDS = 2 * DAY
"""Ranges up to two days get the frustration trend per hour, longer ones per day."""


@dataclass(frozen=True)
class ReportFilter:
    since: float
    until: float
    journey: str = ""
    channel: str = ""
    queue: str = ""

    def describe(self) -> str:
        parts = [f"{_iso(self.since)} to {_iso(self.until)}"]
        parts += [f"{k} {v}" for k, v in (("journey", self.journey), ("channel", self.channel),
                                            ("queue", self.queue)) if v]
        return ", ".join(parts)


@dataclass
class Report:
    filter: ReportFilter
    tables: list[Table]
    headline: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="minutes")


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100): the smallest value with at least p % at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def conversation_queue(path: ConversationPath, jmap: JourneyMap) -> str:
    """The transfer's queue, else the queue of the conversation's first task."""
    if path.transfer_queue:
        return path.transfer_queue
    return next((jmap.queues.get(t, "") for t in path.task_names if jmap.queues.get(t)), "")


def selected(paths: Iterable[ConversationPath], f: ReportFilter, jmap: JourneyMap) -> list[ConversationPath]:
    out = []
    for p in paths:
        if not f.since <= p.created_at < f.until:
            continue
        if f.journey and f.journey not in p.task_names:
            continue
        if f.channel and f.channel not in p.channels:
            continue
        if f.queue and conversation_queue(p, jmap) != f.queue:
            continue
        out.append(p)
    return out


def repeat_contacts(paths: Sequence[ConversationPath], starts: Mapping[str, Sequence[float]],
                    window_days: float) -> set[str]:
    """Ids of the ended conversations whose customer came back within the window."""
    window = window_days * DAY
    out = set()
    for p in paths:
        if not (p.ended and p.customer_id):
            continue
        if any(p.created_at < t <= p.last_at + window for t in starts.get(p.customer_id, ())):
            out.add(p.conversation_id)
    return out


def build_report(paths: Sequence[ConversationPath], starts: Mapping[str, Sequence[float]], jmap: JourneyMap,
                 f: ReportFilter, *, repeat_days: float, low_confidence: float,
                 truncated: bool = False) -> Report:
    chosen = selected(paths, f, jmap)
    ended = [p for p in chosen if p.ended]
    outcomes = Counter(p.outcome for p in ended)
    repeats = repeat_contacts(ended, starts, repeat_days)
    known = [p for p in ended if p.customer_id]
    headline = {
        "conversations": len(chosen), "ended": len(ended), "active": len(chosen) - len(ended),
        "completed": outcomes["completed"], "transferred": outcomes["transferred"],
        "abandoned": outcomes["abandoned"],
        "containment": _rate(outcomes["completed"] + outcomes["abandoned"], len(ended)),
        "transfer_rate": _rate(outcomes["transferred"], len(ended)),
        "abandonment": _rate(outcomes["abandoned"], len(ended)),
        "repeat_contacts": len(repeats),
        "first_contact_resolution": _rate(len(known) - len(repeats), len(known)),
        "turns_per_conversation": _mean([p.turns for p in chosen]),
        "frustrated": _rate(sum(1 for p in chosen if p.max_frustration >= FRUSTRATED), len(chosen)),
    }
    summary = table("summary", "Summary (rates are fractions of ended conversations)",
                    [("measure", "text"), ("value", "number")], [
        (k, float(v)) for k, v in headline.items() if v is not None])
    tables = [summary, _outcomes_by_channel(chosen), _transfers(ended), _journeys(chosen, f, repeats),
              _funnel(chosen, jmap, f), _steps(chosen, low_confidence), _latency(chosen),
              _frustration(chosen, f)]
    return Report(f, tables, headline, truncated)


def _outcomes_by_channel(paths: Sequence[ConversationPath]) -> Table:
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for p in paths:
        for channel in p.channels:
            rows[channel]["conversations"] += 1
            rows[channel][p.outcome] += 1
    return table("channels", "Outcomes by channel (a conversation counts on every channel it used)",
                 [("channel", "text"), ("conversations", "int"), ("completed", "int"), ("transferred", "int"),
                  ("abandoned", "int"), ("active", "int"), ("containment", "percent")],
                 [(c, n["conversations"], n["completed"], n["transferred"], n["abandoned"], n["active"],
                   _rate(n["completed"] + n["abandoned"], n["conversations"] - n["active"]))
                  for c, n in sorted(rows.items())])


def _transfers(ended: Sequence[ConversationPath]) -> Table:
    transferred = [p for p in ended if p.outcome == "transferred"]
    counts = Counter((p.transfer_reason, p.transfer_queue) for p in transferred)
    return table("transfers", "Transfers to agents by reason",
                 [("reason", "text"), ("queue", "text"), ("conversations", "int"), ("share", "percent")],
                 [(r, q, n, _rate(n, len(transferred))) for (r, q), n in
                  sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))])


def _journeys(paths: Sequence[ConversationPath], f: ReportFilter, repeats: set[str]) -> Table:
    per: dict[str, Counter[str]] = defaultdict(Counter)
    turns: dict[str, list[int]] = defaultdict(list)
    for p in paths:
        for name in dict.fromkeys(p.task_names):
            per[name]["conversations"] += 1
            per[name]["switching"] += int(p.channel_switches > 0)
            per[name]["switches"] += p.channel_switches
            per[name]["repeat"] += int(p.conversation_id in repeats)
            turns[name].append(p.turns)
        for task in p.tasks:
            per[task.journey]["entered"] += 1
            state = task.state if task.state != "entered" else ("abandoned" if p.ended else "active")
            per[task.journey][state] += 1
    names = [f.journey] if f.journey else sorted(per)
    return table("journeys", "Tasks: completion, transfers, channel switches",
                 [("journey", "text"), ("conversations", "int"), ("entered", "int"), ("completed", "int"),
                  ("completion", "percent"), ("transferred", "int"), ("abandoned", "int"), ("switched", "int"),
                  ("with_channel_switch", "int"), ("channel_switches", "int"), ("repeat_contacts", "int"),
                  ("turns_mean", "float")],
                 [(n, per[n]["conversations"], per[n]["entered"], per[n]["completed"],
                   _rate(per[n]["completed"], per[n]["entered"] - per[n]["active"]), per[n]["transferred"],
                   per[n]["abandoned"], per[n]["switched"], per[n]["switching"], per[n]["switches"], per[n]["repeat"],
                   _mean(turns[n])) for n in names if per[n]["entered"] or f.journey])


def _funnel(paths: Sequence[ConversationPath], jmap: JourneyMap, f: ReportFilter) -> Table:
    reached: Counter[StepRef] = Counter()
    left: Counter[StepRef] = Counter()
    for p in paths:
        for ref in set(p.visited):
            reached[ref] += 1
        if p.ended and p.outcome != "completed" and p.final_ask is not None:
            left[p.final_ask] += 1
    journeys = [f.journey] if f.journey else sorted({r.journey for r in reached})
    rows = []
    for name in journeys:
        for step in jmap.ask_steps.get(name, ()):
            ref = StepRef(name, step)
            if reached[ref] or f.journey:
                rows.append((name, step, reached[ref], left[ref], _rate(left[ref], reached[ref])))
    return table("funnel", "Drop-off funnel: conversations reaching each question, and ending there without resolution",
                 [("journey", "text"), ("step", "text"), ("reached", "int"), ("ended_here", "int"),
                  ("drop_off", "percent")], rows)


def _steps(paths: Sequence[ConversationPath], low_confidence: float) -> Table:
    agg: dict[StepRef, dict[str, Any]] = {}
    for p in paths:
        for ref, s in p.steps.items():
            a = agg.setdefault(ref, {"asks": 0, "inputs": 0, "re_asks": 0, "no_match": 0, "no_input": 0,
                                     "conf": [], "keypad": 0})
            a["asks"] += s.asks
            a["inputs"] += s.inputs
            a["re_asks"] += s.re_asks
            a["no_match"] += s.no_match
            a["no_input"] += s.no_input
            a["conf"] += s.confidences
            a["keypad"] += s.keypad_fallbacks
    rows = [(r.journey, r.step, a["asks"], a["inputs"], a["re_asks"], a["no_match"], a["no_input"],
             _mean(a["conf"]), _rate(sum(1 for c in a["conf"] if c < low_confidence), len(a["conf"])),
             a["keypad"]) for r, a in sorted(agg.items(), key=lambda kv: (kv[0].journey, kv[0].step))]
    return table("steps", "Effort and recognition per question",
                 [("journey", "text"), ("step", "text"), ("asks", "int"), ("inputs", "int"), ("re_asks", "int"),
                  ("no_match", "int"), ("no_input", "int"), ("confidence_mean", "float"),
                  ("low_confidence", "percent"), ("keypad_fallbacks", "int")], rows)


def _latency(paths: Sequence[ConversationPath]) -> Table:
    samples: dict[str, list[float]] = defaultdict(list)
    for p in paths:
        for stage, values in p.latencies.items():
            samples[stage] += values
    order = ["core"] + list(STAGES)
    return table("latency", "Turn latency per stage (core: customer event to the bot's answer, from the log)",
                 [("stage", "text"), ("samples", "int"), ("mean", "seconds"), ("p50", "seconds"), ("p95", "seconds")],
                 [(s, len(samples[s]), _mean(samples[s]), percentile(samples[s], 50), percentile(samples[s], 95))
                  for s in order if samples.get(s)])


def _frustration(paths: Sequence[ConversationPath], f: ReportFilter) -> Table:
    size = 3600.0 if f.until - f.since <= HOURLY_UP_TO_SECONDS else DAY
    scores: dict[float, list[float]] = defaultdict(list)
    frustrated: Counter[float] = Counter()
    for p in paths:
        for at, score in p.frustration:
            scores[at - at % size].append(score)
        if p.max_frustration >= FRUSTRATED:
            frustrated[p.created_at - p.created_at % size] += 1
    buckets = sorted(set(scores) | set(frustrated))
    return table("frustration", f"Frustration trend per {'hour' if size < DAY else 'day'} (0 calm .. 1 furious)",
                 [("from", "text"), ("utterances", "int"), ("frustration_mean", "float"),
                  ("frustrated_conversations", "int")],
                 [(_iso(b), len(scores[b]), _mean(scores[b]), frustrated[b]) for b in buckets])
