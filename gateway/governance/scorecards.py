"""QA scorecards are data: YAML files in ``qa.scorecards_dir`` (``config/scorecards``, beside the
journeys), each a list of weighted items naming one of the checks :mod:`gateway.governance.qa`
knows, with that check's options::

    scorecard: standard
    pass_score: 0.8                  # share of the applicable weight needed to pass
    journeys: []                     # only conversations that entered one of these tasks (empty: all)
    channels: []                     # only conversations on one of these channels (empty: all)
    items:
      - id: identity_before_account_data
        check: identity_before_disclosure
        weight: 3
        critical: true               # failing it fails the conversation whatever the score
        proof_steps: {identity: [verify_identity.done]}

A bad file is reported with its file, line and reason, like a journey.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.core.journeys import JourneyError, JourneyProblem, _line_of

CheckName = Literal["automation_disclosed", "identity_before_disclosure", "no_unredacted_pii",
                    "resolution_or_handoff", "escalation_within", "courtesy_close"]


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    check: CheckName
    weight: float = Field(1.0, gt=0)
    critical: bool = False
    description: str = ""
    within_first: int = Field(2, ge=1)
    """automation_disclosed: among the bot's first N utterances of the conversation."""
    phrases: tuple[str, ...] = ()
    """automation_disclosed, courtesy_close: what counts (case-insensitive substrings)."""
    max_failed_turns: int = Field(3, ge=1)
    """escalation_within: failed turns at one question before a transfer is due."""
    proof_steps: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """identity_before_disclosure: steps (``journey.step``) whose appearance on a channel proves a
    level there, besides the trust ledger's grants and answered callbacks."""


class Scorecard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    scorecard: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str = ""
    pass_score: float = Field(0.8, ge=0, le=1)
    journeys: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Scorecards:
    cards: tuple[Scorecard, ...]

    def by_name(self, name: str) -> Scorecard | None:
        return next((c for c in self.cards if c.scorecard == name), None)


def load_scorecards(directory: str | Path) -> Scorecards:
    """Every ``*.yaml`` in ``directory``; :class:`JourneyError` lists every problem (file, line, reason)."""
    directory = Path(directory)
    if not directory.is_dir():
        return Scorecards(())
    cards: list[Scorecard] = []
    problems: list[JourneyProblem] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            text = path.read_text(encoding="utf-8")
            root, data = yaml.compose(text), yaml.safe_load(text)
        except (OSError, yaml.YAMLError) as exc:
            problems.append(JourneyProblem(str(path), 1, f"cannot read: {exc}"))
            continue
        try:
            card = Scorecard.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                loc: tuple[Any, ...] = tuple(err.get("loc", ()))
                msg = "unknown key (check the spelling)" if err.get("type") == "extra_forbidden" else err.get("msg")
                problems.append(JourneyProblem(str(path), _line_of(root, loc),
                                               f"{'.'.join(str(p) for p in loc) or 'scorecard'}: {msg}"))
            continue
        ids = [i.id for i in card.items]
        if len(set(ids)) != len(ids):
            problems.append(JourneyProblem(str(path), 1, "item ids must be unique"))
        if any(c.scorecard == card.scorecard for c in cards):
            problems.append(JourneyProblem(str(path), 1, f"scorecard {card.scorecard!r} is defined twice"))
        cards.append(card)
    if problems:
        raise JourneyError(problems)
    return Scorecards(tuple(cards))
