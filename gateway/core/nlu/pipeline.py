"""One call for everything the dialog needs from an utterance: intent, confidence, entities."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import entities
from .classifier import DEFAULT_THRESHOLD, IntentClassifier


@dataclass(frozen=True)
class NluResult:
    """What the NLU understood from one utterance.

    ``intent`` is None when the classifier is not confident enough ("did not understand").
    ``entities`` holds only what was found, under the keys ``digits``, ``yes_no``, ``date``,
    ``amount``, ``spelled`` and ``frustration`` (the latter only when above zero).
    """

    text: str
    intent: str | None
    confidence: float
    ranking: tuple[tuple[str, float], ...]
    entities: dict[str, Any] = field(default_factory=dict)


class Nlu:
    """The intent classifier trained on the journeys' examples, plus the entity parsers."""

    def __init__(self, examples: Mapping[str, Sequence[str]], threshold: float = DEFAULT_THRESHOLD) -> None:
        self.classifier = IntentClassifier.train(examples, threshold=threshold)

    @property
    def threshold(self) -> float:
        return self.classifier.threshold

    def parse(self, text: str, today: dt.date | None = None) -> NluResult:
        """Classify ``text`` and extract every entity it contains."""
        result = self.classifier.classify(text)
        found: dict[str, Any] = {}
        extractors = (
            ("digits", entities.extract_digits(text)),
            ("yes_no", entities.parse_yes_no(text)),
            ("date", entities.parse_date(text, today=today)),
            ("amount", entities.parse_amount(text)),
            ("spelled", entities.parse_spelled(text)),
        )
        for key, value in extractors:
            if value is not None:
                found[key] = value
        frustration = entities.frustration_score(text)
        if frustration > 0:
            found["frustration"] = frustration
        return NluResult(text, result.intent, result.confidence, result.ranking, found)
