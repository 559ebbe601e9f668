"""When the caller has finished: judging the speculative transcript taken in a pause.

The endpointer waits ``end_of_turn_ms`` of silence before it ends a turn, because silence alone
cannot tell a finished answer from a pause for breath. A speculative transcript of the turn so far
(decoded after ``speculative_ms`` of silence) can: ``judge`` returns

- ``COMPLETE``: the answer the question expects is all there (a digit string of the expected
  length, a yes or a no, one of the menu's options, a month and a day): end the turn after
  ``complete_end_ms`` of silence;
- ``SENTENCE``: open speech that ends as a sentence does: end after ``sentence_end_ms``;
- ``HOLD``: open speech that trails off ("um", "and", "so", "because"): the caller is still
  thinking; wait up to ``hold_ms`` (longer than the usual window);
- ``UNSURE``: nothing to go on; the usual window stands.

Pure functions of the text and the ``Expect``; the session applies the decision only while the
caller is still silent in the same pause (``Endpointer.set_window``).
"""

from __future__ import annotations

import re

from gateway.core.actions import Expect
from gateway.voice.asr.base import normalize_words
from gateway.voice.asr.grammar import answer_of, digit_bounds, spoken_digits

COMPLETE = "complete"
SENTENCE = "sentence"
HOLD = "hold"
UNSURE = ""

TRAILING_WORDS = frozenset({
    "um", "uh", "er", "erm", "hmm", "mm", "and", "so", "but", "or", "because", "cause", "like", "then",
    "the", "a", "an", "to", "my", "of", "with", "for", "about", "is", "was", "i", "it", "if", "that",
    "which", "when", "also", "plus", "well",
})
"""A turn whose last word is one of these is not finished: a filler, a conjunction, an article..."""
MONTHS = frozenset({
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december",
})
_DAY = re.compile(r"^(\d{1,2}(st|nd|rd|th)?|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|"
                  r"eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|"
                  r"nineteenth|twentieth|thirtieth|twenty|thirty)$")
_SENTENCE_END = re.compile(r"[.?!]['\")\]]*$")


def judge(text: str, expect: Expect) -> str:
    """What the speculative transcript ``text`` says about the turn (module docstring)."""
    text = text.strip()
    if not text:
        return UNSURE
    words = normalize_words(text)
    if not words:
        return UNSURE
    if expect.kind == "digits":
        # Only a string of one fixed length is ever complete: Whisper writes a partial "one, zero,
        # zero, zero" as "10,000", which would pass for five digits of an order number of 5 to 8.
        low, high = digit_bounds(expect)
        return COMPLETE if expect.max_digits and low == high == len(spoken_digits(text)) else UNSURE
    if expect.closed:
        return COMPLETE if _complete_answer(text, expect) else UNSURE
    if expect.kind == "date":
        if any(w in MONTHS for w in words) and any(_DAY.match(w) for w in words) and words[-1] not in TRAILING_WORDS:
            return COMPLETE
        return UNSURE
    if words[-1] in TRAILING_WORDS or text.endswith(("...", "…", ",", "-")):
        return HOLD
    if _SENTENCE_END.search(text):
        return SENTENCE
    return UNSURE


def _complete_answer(text: str, expect: Expect) -> bool:
    answer = answer_of(text, expect)
    if expect.kind == "choice":
        return bool(answer) and "|" not in answer
    return bool(answer)
