"""Natural-language understanding for the conversation core.

Intents are learned from the examples in the journey files (``intents:`` sections, see
``config/journeys/intents.yaml``) by :class:`IntentClassifier`; entities (digits, yes/no, dates,
amounts, spelled codes, frustration) are read by the pure functions of
:mod:`gateway.core.nlu.entities`. :class:`Nlu` does both in one call. Everything is built to
survive speech-recognition errors: number words, "oh" for zero, homophones, fillers, split words.

Adding or improving an intent means adding examples: 15-30 varied ways of saying it, short and
long, with and without the topic word. ``python -m bench.nlu_accuracy`` then prints accuracy on
held-out paraphrases (never copy those into the examples), the out-of-scope rejection rate, a
threshold sweep and cross-validation on the examples (``--cv 5``). Below ``settings.nlu.threshold``
the classifier returns no intent and the dialog says it did not understand.
"""

from .classifier import DEFAULT_THRESHOLD, IntentClassifier, IntentResult
from .pipeline import Nlu, NluResult

__all__ = ["DEFAULT_THRESHOLD", "IntentClassifier", "IntentResult", "Nlu", "NluResult"]
