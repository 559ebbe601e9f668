"""What analytics need to know about the journeys: which step ids the log shows, and where a
task ends.

The event log names a step by the ``prompt_id`` of the bot's ``Ask`` or ``Say`` (the step id; a
retry's prompt is ``<step>.no_match`` or ``<step>.no_input``), not by its journey. Ask steps
have ids unique across the shipped journeys; an id several journeys share is attributed to the
journey the conversation is in when it appears, else to the first journey (by name) that has it.

A *task* is a journey customers come for (it has intents of its own, not only the global ones:
order status, billing dispute ...). A helper journey (welcome, wrap-up, verification, callback)
serves the task around it. A task is completed when the conversation moves on to the journey
the task hands over to at its end (its last ``call:`` with ``next: END``, the wrap-up), to the
default journey's question again, or through an ``end:`` step of its own, before any transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.journeys import GLOBAL_INTENTS, AskStep, CallStep, EndStep, JourneySet

RETRY_SUFFIXES = ("no_match", "no_input")


@dataclass(frozen=True)
class StepRef:
    journey: str
    step: str


@dataclass(frozen=True)
class JourneyMap:
    journeys_of_step: dict[str, tuple[str, ...]]
    tasks: frozenset[str]
    ask_steps: dict[str, tuple[str, ...]]
    """Each journey's ask steps in file order (the funnel's rows)."""
    hands_over_to: dict[str, frozenset[str]]
    end_steps: frozenset[StepRef]
    queues: dict[str, str]
    requires: dict[str, str]
    task_of_intent: dict[str, str]
    default_journey: str

    @classmethod
    def from_journeys(cls, journeys: JourneySet, default_journey: str) -> "JourneyMap":
        of_step: dict[str, list[str]] = {}
        asks: dict[str, tuple[str, ...]] = {}
        hands: dict[str, frozenset[str]] = {}
        ends: set[StepRef] = set()
        for name in sorted(journeys.journeys):
            journey = journeys.journeys[name]
            for step in journey.steps:
                of_step.setdefault(step.id, []).append(name)
                if isinstance(step, EndStep):
                    ends.add(StepRef(name, step.id))
            asks[name] = tuple(s.id for s in journey.steps if isinstance(s, AskStep))
            hands[name] = frozenset(s.call for s in journey.steps
                                    if isinstance(s, CallStep) and journey.next_of(s) == "END")
        tasks = frozenset(n for n, j in journeys.journeys.items()
                          if j.intents and not set(j.intents) <= set(GLOBAL_INTENTS))
        intents = {i: n for n in sorted(tasks, reverse=True) for i in journeys.journeys[n].intents}
        return cls({k: tuple(v) for k, v in of_step.items()}, tasks, asks, hands, frozenset(ends),
                   {n: j.queue for n, j in journeys.journeys.items()},
                   {n: j.requires or "" for n, j in journeys.journeys.items()}, intents, default_journey)

    def resolve(self, prompt_id: str, current: str) -> tuple[StepRef | None, str]:
        """The step a ``prompt_id`` names and the retry kind it carries ('' for a plain prompt)."""
        step_id, _, suffix = prompt_id.partition(".")
        if suffix not in RETRY_SUFFIXES:
            step_id, suffix = prompt_id, ""
        candidates = self.journeys_of_step.get(step_id, ())
        if not candidates:
            return None, suffix
        journey = current if current in candidates else candidates[0]
        return StepRef(journey, step_id), suffix
