"""The kinds of journey step, one class each, and :data:`Step`, their discriminated union.

A step in a journey file is a mapping whose *kind* is the one key among ``ask``, ``say``, ``run``,
``branch``, ``transfer``, ``follow_up``, ``offer_call``, ``call`` and ``end`` it holds::

    - id: ask_order
      ask: {voice: "Say or key in your order number.", chat: "What is your order number?"}
      expect: digits
      digits: [5, 8]
      slot: order_id

Each kind is a frozen pydantic model with only its own options (an option of another kind is an
"unknown key" at its line). The union is discriminated by that key, so validation reports the
errors of the one model the step is, and the engine runs it with the runner registered for its
class (:data:`gateway.core.steps.STEP_RUNNERS`). A new kind of step is one class here (its ``KIND``
names its key) and one runner there.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Iterator, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, model_validator

from gateway.core.channels import Channel, Wording

ExpectName = Literal["open", "digits", "yesno", "choice", "date", "amount", "dob_or_pin", "none"]
MAX_DIGITS = 32  # the longest digit string an ask may expect (a keyed account or card number fits)


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


class StepBase(BaseModel):
    """What every step has: its id, where it goes next (default: the following step), and
    ``skip_if_verified`` (a requirement: a party that holds it skips to the journey's end)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    KIND: ClassVar[str] = ""
    id: str
    next: str | None = None
    skip_if_verified: str | None = None

    @property
    def kind(self) -> str:
        return self.KIND

    def targets(self) -> list[str]:
        """Every step id (or ``journey:<name>``, ``END``) this step can lead to."""
        return [self.next] if self.next else []

    def prompts(self) -> Iterator[Prompt]:
        """The prompts this step may say (for warming the speech synthesis up)."""
        return iter(())


class AskStep(StepBase):
    """Asks the customer and waits: ``expect`` what kind of answer, into ``slot``."""

    KIND: ClassVar[str] = "ask"
    ask: PromptSpec
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

    @model_validator(mode="after")
    def _answerable(self) -> "AskStep":
        if self.expect not in ("open", "none") and not self.slot:
            raise ValueError(f"step {self.id!r} asks for {self.expect} but names no slot")
        if self.expect == "choice" and not self.options:
            raise ValueError(f"step {self.id!r} expects a choice but lists no options")
        if self.digits and not (0 < self.digits[0] <= self.digits[1] <= MAX_DIGITS):
            raise ValueError(f"step {self.id!r}: digits must be [min, max] with 0 < min <= max <= {MAX_DIGITS}")
        return self

    @property
    def routes(self) -> bool:
        """An open question with no slot: the answer chooses the journey (the welcome's "how can I help")."""
        return self.expect == "open" and not self.slot

    def retry_prompt(self, kind: str) -> Prompt | None:
        """The step's own wording for a ``no_input`` or ``no_match`` retry, if it has one."""
        return as_prompt(self.no_input if kind == "no_input" else self.no_match)

    def prompts(self) -> Iterator[Prompt]:
        for spec in (self.ask, self.confirm, self.no_match, self.no_input, self.help):
            prompt = as_prompt(spec)
            if prompt is not None:
                yield prompt


class SayStep(StepBase):
    """Says something and goes on."""

    KIND: ClassVar[str] = "say"
    say: PromptSpec

    def prompts(self) -> Iterator[Prompt]:
        yield Prompt(text=self.say) if isinstance(self.say, str) else self.say


class RunStep(StepBase):
    """Runs a lookup (``run: order_status``) or a Rasa action (``run: rasa:<action>``); its
    outcome chooses the next step in ``outcomes`` (``default`` for any other)."""

    KIND: ClassVar[str] = "run"
    run: str
    args: dict[str, Any] = Field(default_factory=dict)
    outcomes: dict[str, str] = Field(default_factory=dict)

    def targets(self) -> list[str]:
        return super().targets() + list(self.outcomes.values())


class BranchStep(StepBase):
    """Goes on at ``cases[value]`` of a slot's value (or of the channel: ``branch: channel``)."""

    KIND: ClassVar[str] = "branch"
    branch: str
    cases: dict[str, str] = Field(default_factory=dict)

    def targets(self) -> list[str]:
        return super().targets() + list(self.cases.values())


class TransferStep(StepBase):
    """Hands the conversation to people: queue ``transfer`` (else the journey's), with ``skills``."""

    KIND: ClassVar[str] = "transfer"
    transfer: str
    skills: tuple[str, ...] = ()
    reason: str = ""
    prompt: PromptSpec | None = None


class FollowUpStep(StepBase):
    """Sends a follow-up: by ``sms`` to the phone on file, or into the ``chat``, with a signed
    ``link`` when one is named."""

    KIND: ClassVar[str] = "follow_up"
    follow_up: Literal["sms", "chat"]
    template: str = ""
    message: str = ""
    link: str = ""
    prompt: PromptSpec | None = None


class OfferCallStep(StepBase):
    """Offers a digital customer a call to the number on file (nothing on a call)."""

    KIND: ClassVar[str] = "offer_call"
    offer_call: PromptSpec

    def prompts(self) -> Iterator[Prompt]:
        yield Prompt(text=self.offer_call) if isinstance(self.offer_call, str) else self.offer_call


class CallStep(StepBase):
    """Runs journey ``call`` as a sub-journey, then comes back to ``next``."""

    KIND: ClassVar[str] = "call"
    call: str


class EndStep(StepBase):
    """Says goodbye and ends the conversation."""

    KIND: ClassVar[str] = "end"
    end: PromptSpec

    def prompts(self) -> Iterator[Prompt]:
        yield Prompt(text=self.end) if isinstance(self.end, str) else self.end


STEP_KINDS: tuple[type[StepBase], ...] = (AskStep, SayStep, RunStep, BranchStep, TransferStep, FollowUpStep,
                                          OfferCallStep, CallStep, EndStep)
"""Every kind of step, in the order the error for a step with none (or two) lists them."""
_BY_KEY = {cls.KIND: cls for cls in STEP_KINDS}
_OPTIONS = frozenset(name for cls in STEP_KINDS for name in cls.model_fields)
"""Every option some kind of step has (a key outside it is misspelt)."""


def _kinds_in(raw: Any) -> list[str]:
    return [key for key in _BY_KEY if isinstance(raw, dict) and raw.get(key) is not None]


def _one_kind(raw: Any) -> Any:
    """A step names exactly one kind (checked before the union picks its model, so that the
    error names the step and what it found, at the step's line)."""
    if isinstance(raw, dict):
        kinds = _kinds_in(raw)
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            unknown = [str(key) for key in raw if key not in _OPTIONS]
            hint = f"; unknown key {', '.join(unknown)}: check the spelling" if unknown and not kinds else ""
            raise ValueError(f"step {raw.get('id')!r} needs exactly one of {', '.join(_BY_KEY)} (found: {found}){hint}")
    return raw


def _kind_of(raw: Any) -> str | None:
    if isinstance(raw, StepBase):
        return raw.KIND
    kinds = _kinds_in(raw)
    return kinds[0] if len(kinds) == 1 else None


Step = Annotated[
    Union[tuple(Annotated[cls, Tag(cls.KIND)] for cls in STEP_KINDS)],  # type: ignore[misc]
    Discriminator(_kind_of),
    BeforeValidator(_one_kind),
]
"""One journey step: the model of its kind (validated as a discriminated union)."""
