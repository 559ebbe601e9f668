"""Journeys are data: steps, slots, prompts per channel, retries and escalation, in YAML.

A journey file (``config/journeys/*.yaml``) holds one journey::

    journey: order_status
    intents: [order_status]          # intents that start it (examples live in intents.yaml)
    requires: identity               # a fact that must be verified first (runs the verify journey)
    steps:
      - id: ask_order
        ask: {voice: "Say or key in your order number.", chat: "What is your order number?"}
        expect: digits               # open | digits | yesno | choice | date | amount | dob_or_pin
        digits: [5, 8]
        slot: order_id
        next: lookup
      - id: lookup
        run: order_status            # a lookup registered by the gateway, or rasa:<action>
        outcomes: {found: tell, not_found: ask_order, error: crm_down}

A file may also hold ``intents:`` examples (merged into the NLU training set). Validation
reports each problem with its file, line and reason. The kinds of step are in
:mod:`gateway.core.journey_steps`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from gateway.core.journey_steps import (STEP_KINDS, AskStep, BranchStep, CallStep, EndStep, ExpectName,
                                        FollowUpStep, OfferCallStep, Prompt, PromptSpec, RunStep, SayStep, Step,
                                        StepBase, TransferStep, as_prompt)

__all__ = ["AskStep", "BranchStep", "CallStep", "EndStep", "ExpectName", "FollowUpStep", "GLOBAL_INTENTS",
           "Journey", "JourneyError", "JourneyProblem", "JourneySet", "OfferCallStep", "Prompt", "PromptSpec",
           "RunStep", "SayStep", "Step", "StepBase", "TransferStep", "as_prompt", "load_journeys"]
_KIND_KEYS = frozenset(cls.KIND for cls in STEP_KINDS)

GLOBAL_INTENTS = ("agent", "repeat", "go_back", "goodbye", "help")


class Journey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    journey: str
    description: str = ""
    intents: tuple[str, ...] = ()
    requires: str | None = None
    queue: str = ""
    skills: tuple[str, ...] = ()
    voicemail: PromptSpec | None = None
    """What an outbound call of this journey leaves on an answering machine (after the beep).
    Only ``{customer_first_name}`` and ``{organisation}`` are filled in: a voicemail box is not the
    customer (anyone in the house may hear it)."""
    steps: tuple[Step, ...]

    @field_validator("steps")
    @classmethod
    def _non_empty(cls, steps: tuple[StepBase, ...]) -> tuple[StepBase, ...]:
        if not steps:
            raise ValueError("a journey needs at least one step")
        return steps

    @model_validator(mode="after")
    def _references(self) -> "Journey":
        ids = [s.id for s in self.steps]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate step ids: {', '.join(dupes)}")
        known = set(ids) | {"END"}
        for step in self.steps:
            for target in step.targets():
                if target not in known and not target.startswith("journey:"):
                    raise ValueError(f"step {step.id!r} leads to unknown step {target!r}")
        return self

    def step(self, step_id: str) -> StepBase:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def after(self, step_id: str) -> str | None:
        """The step following ``step_id`` in file order (the default ``next``)."""
        ids = [s.id for s in self.steps]
        i = ids.index(step_id)
        return ids[i + 1] if i + 1 < len(ids) else None

    def next_of(self, step: StepBase) -> str:
        """Where ``step`` goes on to: its ``next``, else the following step, else ``END``."""
        return step.next or self.after(step.id) or "END"


@dataclass(frozen=True)
class JourneyProblem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class JourneyError(ValueError):
    """One or more journey files are invalid."""

    def __init__(self, problems: list[JourneyProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class JourneySet:
    journeys: dict[str, Journey]
    intent_examples: dict[str, list[str]]

    def for_intent(self, intent: str) -> Journey | None:
        for journey in self.journeys.values():
            if intent in journey.intents:
                return journey
        return None


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the YAML node at pydantic location ``loc`` (nearest found)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def _without_kind_tag(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A step's error location without the kind the union adds (``steps.1.say.colour`` is the
    key ``colour`` of step 1, a ``say`` step), so it names the key in the file."""
    if len(loc) > 2 and loc[0] == "steps" and isinstance(loc[1], int) and loc[2] in _KIND_KEYS:
        return loc[:2] + loc[3:]
    return loc


def _parse_file(path: Path) -> tuple[Journey | None, dict[str, list[str]], list[JourneyProblem]]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except OSError as exc:
        return None, {}, [JourneyProblem(name, 1, f"cannot read: {exc.strerror}")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        return None, {}, [JourneyProblem(name, line, f"not valid YAML: {getattr(exc, 'problem', exc)}")]
    if not isinstance(data, dict):
        return None, {}, [JourneyProblem(name, 1, "a journey file must hold a mapping")]
    problems: list[JourneyProblem] = []
    examples: dict[str, list[str]] = {}
    raw_intents = data.pop("intents", None) if "journey" not in data else None
    if raw_intents is not None:
        if not isinstance(raw_intents, dict):
            problems.append(JourneyProblem(name, _line_of(root, ("intents",)), "intents must map names to examples"))
        else:
            for intent, body in raw_intents.items():
                items = body.get("examples") if isinstance(body, dict) else body
                if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                    problems.append(JourneyProblem(name, _line_of(root, ("intents", intent)),
                                                   f"intent {intent!r} needs a list of example strings"))
                    continue
                examples.setdefault(str(intent), []).extend(items)
    if "journey" not in data:
        if raw_intents is None:
            problems.append(JourneyProblem(name, 1, "missing key 'journey' (or 'intents')"))
        return None, examples, problems
    try:
        journey = Journey.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = _without_kind_tag(tuple(err.get("loc", ())))
            where = ".".join(str(p) for p in loc) or "journey"
            msg = err.get("msg", "invalid").removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "unknown key (check the spelling)"
            problems.append(JourneyProblem(name, _line_of(root, loc), f"{where}: {msg}"))
        return None, examples, problems
    return journey, examples, problems


def load_journeys(directory: str | Path, known_runs: set[str] | None = None) -> JourneySet:
    """Load and validate every ``*.yaml`` in ``directory``; raises JourneyError listing all problems."""
    directory = Path(directory)
    if not directory.is_dir():
        raise JourneyError([JourneyProblem(str(directory), 1, "journey directory not found")])
    journeys: dict[str, Journey] = {}
    examples: dict[str, list[str]] = {}
    problems: list[JourneyProblem] = []
    where: dict[str, Path] = {}
    for path in sorted(directory.glob("*.yaml")):
        journey, found, file_problems = _parse_file(path)
        problems += file_problems
        for intent, items in found.items():
            examples.setdefault(intent, []).extend(items)
        if journey is None:
            continue
        if journey.journey in journeys:
            problems.append(JourneyProblem(str(path), 1, f"journey {journey.journey!r} also defined in {where[journey.journey]}"))
            continue
        journeys[journey.journey] = journey
        where[journey.journey] = path
    problems += _cross_check(journeys, examples, where, known_runs)
    if problems:
        raise JourneyError(problems)
    return JourneySet(journeys, examples)


def _cross_check(journeys: dict[str, Journey], examples: dict[str, list[str]], where: dict[str, Path],
                 known_runs: set[str] | None) -> list[JourneyProblem]:
    problems: list[JourneyProblem] = []
    for name, journey in journeys.items():
        path = where[name]
        root = yaml.compose(path.read_text(encoding="utf-8"))
        for i, step in enumerate(journey.steps):
            for target in step.targets():
                if target.startswith("journey:") and target[8:] not in journeys:
                    problems.append(JourneyProblem(str(path), _line_of(root, ("steps", i)),
                                                   f"step {step.id!r} leads to unknown journey {target[8:]!r}"))
            if isinstance(step, CallStep) and step.call not in journeys:
                problems.append(JourneyProblem(str(path), _line_of(root, ("steps", i, "call")),
                                               f"step {step.id!r} calls unknown journey {step.call!r}"))
            if (isinstance(step, RunStep) and known_runs is not None and not step.run.startswith("rasa:")
                    and step.run not in known_runs):
                problems.append(JourneyProblem(str(path), _line_of(root, ("steps", i, "run")),
                                               f"step {step.id!r} runs unknown lookup {step.run!r}"))
        if journey.requires and "verify_" + journey.requires not in journeys:
            problems.append(JourneyProblem(str(path), _line_of(root, ("requires",)),
                                           f"requires {journey.requires!r} but no journey 'verify_{journey.requires}' exists"))
        for intent in journey.intents:
            if examples and intent not in examples:
                problems.append(JourneyProblem(str(path), _line_of(root, ("intents",)),
                                               f"intent {intent!r} has no examples in any intents file"))
    return problems
