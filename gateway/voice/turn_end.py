"""When the caller has finished: judging the speculative transcript taken in a pause.

The endpointer waits ``end_of_turn_ms`` of silence before it ends a turn, because silence alone
cannot tell a finished answer from a pause for breath. A speculative transcript of the turn so far
(decoded after ``speculative_ms`` of silence) can: ``judge`` returns

- ``COMPLETE``: the answer the question expects is all there (a digit string of the expected
  length, a yes or a no, one of the menu's options, a month and a day): end the turn after
  ``complete_end_ms`` of silence;
- ``IN_RANGE``: a digit string whose length is a range (an order number of 5 to 8 digits) with a
  count inside it, counted where the count can be trusted (the grammar heard the same count, or
  the transcript writes the digits one by one, not as a number Whisper may have miscounted, like
  "10,000" for "one zero zero zero"): it could be all of it or the caller could go on, so
  the turn ends after ``range_end_ms`` (VoiceXML's complete timeout; at the longest length it is
  ``COMPLETE``);
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
from gateway.voice.asr.grammar import answer_of, digit_bounds, one_by_one, spoken_digits

COMPLETE = "complete"
IN_RANGE = "range"
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


def judge(text: str, expect: Expect, grammar_text: str | None = None) -> str:
    """What the speculative transcript ``text`` says about the turn (module docstring);
    ``grammar_text`` is what the closed-set grammar heard (``Transcript.grammar_text``)."""
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
        count = len(spoken_digits(text))
        if expect.max_digits and low == high == count:
            return COMPLETE
        # A range is judged only on a count that can be trusted: the grammar's words (one per
        # digit) counting the same, or digits written one by one ("1-0-0-0-1", "one zero zero").
        agreed = grammar_text is not None and len(spoken_digits(grammar_text)) == count
        if not expect.max_digits or not (agreed or one_by_one(text)):
            return UNSURE
        return COMPLETE if count == high else IN_RANGE if low <= count < high else UNSURE
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
