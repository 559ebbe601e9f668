"""Spoken numbers: "four five six", "twenty three", "nineteen eighty five", "double seven".

Callers say numbers in word form, recognisers transcribe them either way ("twenty three",
"23", "twenty-three"), and digits are often read one by one with "oh" for zero. This module
turns a token list (from :mod:`gateway.core.nlu.text`) into number groups; the entity parsers
decide what a group means (account digits, a day of the month, dollars and cents).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9,
}
TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
SCALES = {"thousand": 1000, "million": 1_000_000}
ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
    "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "thirtieth": 30,
}
# Zero as people read digits aloud.
ZERO_WORDS = frozenset({"oh", "o", "nought", "naught", "nil"})
# Recogniser homophones of digits; only trusted next to other digits ("one two three for").
DIGIT_HOMOPHONES = {"for": "4", "fore": "4", "to": "2", "too": "2", "won": "1", "ate": "8"}
REPEATS = {"double": 2, "triple": 3, "treble": 3}

_DIGITS_RE = re.compile(r"^\d+$")
_ORDINAL_RE = re.compile(r"^(\d+)(st|nd|rd|th)$")


@dataclass(frozen=True)
class NumberGroup:
    """One spoken or written number: ``value`` as an int, ``digits`` exactly as said ("007")."""

    value: int
    digits: str
    start: int
    end: int  # index after the last token of the group


def is_number_word(tok: str) -> bool:
    """True for a cardinal number word or a token made of digits."""
    return tok in UNITS or tok in TEENS or tok in TENS or tok == "hundred" or tok in SCALES or bool(
        _DIGITS_RE.match(tok)
    )


def ordinal_value(tokens: list[str], i: int) -> tuple[int, int] | None:
    """An ordinal at ``tokens[i]`` ("third", "3rd", "twenty third") as ``(value, next_index)``."""
    if i >= len(tokens):
        return None
    tok = tokens[i]
    m = _ORDINAL_RE.match(tok)
    if m:
        return int(m.group(1)), i + 1
    if tok in ORDINALS:
        return ORDINALS[tok], i + 1
    if tok in TENS and i + 1 < len(tokens):
        nxt = tokens[i + 1]
        if nxt in ORDINALS and ORDINALS[nxt] < 10:
            return TENS[tok] + ORDINALS[nxt], i + 2
    return None


def parse_cardinal(tokens: list[str], i: int) -> NumberGroup | None:
    """The longest well-formed cardinal starting at ``tokens[i]``, or None.

    English grammar decides where one number ends and the next begins: "twenty three" is
    one number, "four five six" is three, "nineteen eighty five" is two (19, 85) and
    "forty two fifty" is two (42, 50). Zero never combines with anything.
    """
    if i >= len(tokens):
        return None
    tok = tokens[i]
    if _DIGITS_RE.match(tok):
        return NumberGroup(int(tok), tok, i, i + 1)
    if tok == "zero":
        return NumberGroup(0, "0", i, i + 1)
    total = 0
    current = 0
    last: str | None = None
    j = i
    while j < len(tokens):
        tok = tokens[j]
        nxt = tokens[j + 1] if j + 1 < len(tokens) else ""
        if tok == "a" and last is None and nxt in ("hundred", "thousand", "million"):
            current, last = 1, "unit"
        elif tok in UNITS and tok != "zero" and last in (None, "tens", "hundred", "scale"):
            current += UNITS[tok]
            last = "unit"
        elif tok in TEENS and last in (None, "hundred", "scale"):
            current += TEENS[tok]
            last = "teen"
        elif tok in TENS and last in (None, "hundred", "scale"):
            current += TENS[tok]
            last = "tens"
        elif tok == "hundred" and last in ("unit", "teen", "tens") and current < 100:
            current *= 100
            last = "hundred"
        elif tok in SCALES and last in ("unit", "teen", "tens", "hundred"):
            total += current * SCALES[tok]
            current = 0
            last = "scale"
        elif tok == "and" and last in ("hundred", "scale") and (nxt in UNITS or nxt in TEENS or nxt in TENS):
            pass
        else:
            break
        j += 1
    if last is None:
        return None
    value = total + current
    return NumberGroup(value, str(value), i, j)


def number_groups(tokens: list[str], homophones: bool = False) -> list[NumberGroup]:
    """Every number group in ``tokens``, left to right.

    With ``homophones``, "oh" and digit homophones ("for", "to") count as digits when they
    stand next to other digits, and "double seven" / "triple two" repeat the digit.
    """
    groups: list[NumberGroup] = []
    i = 0
    n = len(tokens)
    while i < n:
        tok = tokens[i]
        if homophones and tok in REPEATS and i + 1 < n:
            inner = _digit_at(tokens, i + 1)
            if inner is not None:
                digit, end = inner
                groups.append(NumberGroup(int(digit), digit * REPEATS[tok], i, end))
                i = end
                continue
        group = parse_cardinal(tokens, i)
        if group is None and homophones:
            digit = _homophone_digit(tokens, i, groups)
            if digit is not None:
                group = NumberGroup(int(digit), digit, i, i + 1)
        if group is None:
            i += 1
            continue
        groups.append(group)
        i = group.end
    return groups


def _digit_at(tokens: list[str], i: int) -> tuple[str, int] | None:
    """A single digit at ``tokens[i]`` (for "double seven", "triple oh")."""
    tok = tokens[i]
    if tok in UNITS:
        return str(UNITS[tok]), i + 1
    if tok in ZERO_WORDS:
        return "0", i + 1
    if len(tok) == 1 and tok.isdigit():
        return tok, i + 1
    return None


def _is_digitish(tok: str) -> bool:
    return tok in UNITS or tok in TEENS or tok in TENS or bool(_DIGITS_RE.match(tok)) or tok in REPEATS


def _homophone_digit(tokens: list[str], i: int, groups: list[NumberGroup]) -> str | None:
    """Zero words and digit homophones, trusted only inside a run of digits."""
    tok = tokens[i]
    prev_is_digit = bool(groups) and groups[-1].end == i
    nxt = tokens[i + 1] if i + 1 < len(tokens) else None
    next_is_digit = nxt is not None and (_is_digitish(nxt) or nxt in ZERO_WORDS)
    if tok in ZERO_WORDS:
        return "0" if (prev_is_digit or next_is_digit) else None
    if tok in DIGIT_HOMOPHONES and prev_is_digit and (next_is_digit or nxt is None):
        return DIGIT_HOMOPHONES[tok]
    return None
