"""Natural-language understanding for the conversation core.

Intents are learned from the examples in the journey files (``intents:`` sections) by
:class:`IntentClassifier`; entities (digits, yes/no, dates, amounts, spelled codes, frustration)
are read by the pure functions of :mod:`gateway.core.nlu.entities`. :class:`Nlu` does both in
one call. Everything is built to survive speech-recognition errors: number words, "oh" for zero,
homophones, fillers, split words.
"""

from .classifier import DEFAULT_THRESHOLD, IntentClassifier, IntentResult
from .pipeline import Nlu, NluResult

__all__ = ["DEFAULT_THRESHOLD", "IntentClassifier", "IntentResult", "Nlu", "NluResult"]
