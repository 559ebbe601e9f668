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
reports each problem with its file, line and reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.core.channels import Channel, Wording

ExpectName = Literal["open", "digits", "yesno", "choice", "date", "amount", "dob_or_pin", "none"]
GLOBAL_INTENTS = ("agent", "repeat", "go_back", "goodbye", "help")


class Prompt(BaseModel):
    """Wording of one prompt; ``voice``/``chat``/``sms`` override ``text`` on that channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str = ""
    voice: str = ""
    chat: str = ""
    sms: str = ""

    @model_validator(mode="after")
    def _some_text(self) -> "Prompt":
        if not (self.text or self.voice or self.chat or self.sms):
            raise ValueError("a prompt needs text (or voice/chat/sms wording)")
        return self

    def for_channel(self, channel: Channel | str) -> str:
        """The wording for ``channel`` (its :class:`~gateway.core.channels.Wording`), else the
        first wording the prompt has."""
        wording = Channel.of(channel).wording
        own = {Wording.VOICE: self.voice, Wording.CHAT: self.chat, Wording.SMS: self.sms}.get(wording, "")
        return own or self.text or self.chat or self.voice or self.sms


PromptSpec = Union[str, Prompt]


def as_prompt(spec: PromptSpec | None) -> Prompt | None:
    if spec is None:
        return None
    return Prompt(text=spec) if isinstance(spec, str) else spec


class Step(BaseModel):
    """One step. Exactly one of ``ask``, ``say``, ``run``, ``branch``, ``transfer``,
    ``follow_up``, ``offer_call``, ``call``, ``end`` gives its kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    # kinds
    ask: PromptSpec | None = None
    say: PromptSpec | None = None
    run: str | None = None
    branch: str | None = None
    transfer: str | None = None
    follow_up: Literal["sms", "chat"] | None = None
    offer_call: PromptSpec | None = None
    call: str | None = None
    end: PromptSpec | None = None
    # ask options
    expect: ExpectName = "open"
    slot: str | None = None
    digits: tuple[int, int] | None = None
    options: tuple[str, ...] = ()
    sensitive: bool = False
    confirm: PromptSpec | None = None
    no_match: PromptSpec | None = None
    no_input: PromptSpec | None = None
    help: PromptSpec | None = None
    skip_if_slot: bool = True
    # run / branch options
    args: dict[str, Any] = Field(default_factory=dict)
    outcomes: dict[str, str] = Field(default_factory=dict)
    cases: dict[str, str] = Field(default_factory=dict)
    # transfer / follow-up options
    skills: tuple[str, ...] = ()
    reason: str = ""
    template: str = ""
    message: str = ""
    link: str = ""
    prompt: PromptSpec | None = None
    skip_if_verified: str | None = None
    next: str | None = None

    KINDS: ClassVar[tuple[str, ...]] = ("ask", "say", "run", "branch", "transfer", "follow_up", "offer_call", "call", "end")

    @property
    def kind(self) -> str:
        for name in self.KINDS:
            if getattr(self, name) is not None:
                return name
        return ""

    @model_validator(mode="after")
    def _one_kind(self) -> "Step":
        kinds = [name for name in self.KINDS if getattr(self, name) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            raise ValueError(f"step {self.id!r} needs exactly one of {', '.join(self.KINDS)} (found: {found})")
        if self.ask is not None and self.expect not in ("open", "none") and not self.slot:
            raise ValueError(f"step {self.id!r} asks for {self.expect} but names no slot")
        if self.expect == "choice" and self.ask is not None and not self.options:
            raise ValueError(f"step {self.id!r} expects a choice but lists no options")
        if self.digits and not (0 < self.digits[0] <= self.digits[1] <= 32):
            raise ValueError(f"step {self.id!r}: digits must be [min, max] with 0 < min <= max <= 32")
        return self

    def targets(self) -> list[str]:
        """Every step id this step can lead to."""
        out = [t for t in (self.next,) if t]
        out += list(self.outcomes.values()) + list(self.cases.values())
        return out


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
    def _non_empty(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
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

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def after(self, step_id: str) -> str | None:
        """The step following ``step_id`` in file order (the default ``next``)."""
        ids = [s.id for s in self.steps]
        i = ids.index(step_id)
        return ids[i + 1] if i + 1 < len(ids) else None


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
            loc = tuple(err.get("loc", ()))
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
            if step.call and step.call not in journeys:
                problems.append(JourneyProblem(str(path), _line_of(root, ("steps", i, "call")),
                                               f"step {step.id!r} calls unknown journey {step.call!r}"))
            if step.run and known_runs is not None and not step.run.startswith("rasa:") and step.run not in known_runs:
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
