"""Digit strings as people type them and as recognizers write them down.

A card number reaches the gateway as ``4111 1111 1111 1111``, ``4111.1111.1111.1111``,
``4111  1111-1111 1111``, ``four one one one one one ...``, ``4 1 1 1 double one ...`` or
``forty one eleven ...``. This module turns text into *digit runs*: consecutive digit tokens
(written groups, spoken digits, "double"/"triple" digits, teens and tens) joined by the
separators people put between digit groups. Every recognizer in this package reads runs,
so "any separator" and "spoken digits" are handled once, here.

What joins two tokens (``GAP``): up to two spaces, optionally around one dash, dot or slash
(``4111 - 1111``, ``4111/1111``). A comma joins spoken-style tokens (single digits or words:
"four, one, one, one") and two written groups of four ("4111, 1111", as Whisper writes the
pauses between card groups), never other written groups: ``$1,234`` and
``555-123-4567, 555-987-6543`` are not one number. A line break never joins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = {
    "zero": "0", "oh": "0", "o": "0", "nought": "0",
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
}
TEENS = {
    "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19",
}
TENS = {
    "twenty": "2", "thirty": "3", "forty": "4", "fifty": "5",
    "sixty": "6", "seventy": "7", "eighty": "8", "ninety": "9",
}
REPEATS = {"double": 2, "triple": 3}

_UNIT = "|".join(sorted(UNITS, key=len, reverse=True))
_NONZERO = "one|two|three|four|five|six|seven|eight|nine"
_TOKEN = re.compile(
    r"(?i)(?<!\w)(?=[\dzotfsned])(?:"  # the lookahead (first letters of the words) halves the scan
    r"(?P<num>\d+)"
    rf"|(?P<rep>double|triple)[ \t-]+(?P<rep_of>{_UNIT}|\d)"
    rf"|(?P<tens>{'|'.join(TENS)})(?:[ \t-]+(?P<tens_unit>{_NONZERO}))?"
    rf"|(?P<teen>{'|'.join(TEENS)})"
    rf"|(?P<unit>{_UNIT})"
    r")(?!\w)"
)
GAP = re.compile(r"[ \t\u00a0]{0,2}[-./,\u2013\u2014]?[ \t\u00a0]{0,2}")
"""What may stand between two tokens of one run (checked with ``fullmatch``; empty never joins)."""
MAX_GAP_CHARS = 5  # two spaces, a separator, two spaces


@dataclass(frozen=True, slots=True)
class Token:
    """One digit token: its span in the text, the digits it stands for, and whether it was a
    written digit group (``num``) rather than words."""

    start: int
    end: int
    digits: str
    written: bool


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive tokens joined by separators; ``gaps[i]`` is the text between token i and i+1."""

    tokens: tuple[Token, ...]
    gaps: tuple[str, ...]

    @property
    def start(self) -> int:
        return self.tokens[0].start

    @property
    def end(self) -> int:
        return self.tokens[-1].end

    @property
    def digits(self) -> str:
        return "".join(t.digits for t in self.tokens)


def _token(match: re.Match[str]) -> Token:
    groups = match.groupdict()
    if groups["num"] is not None:
        digits, written = groups["num"], True
    elif groups["rep"] is not None:
        of = groups["rep_of"].lower()
        digits, written = UNITS.get(of, of) * REPEATS[groups["rep"].lower()], False
    elif groups["tens"] is not None:
        unit = groups["tens_unit"]
        digits, written = TENS[groups["tens"].lower()] + (UNITS[unit.lower()] if unit else "0"), False
    elif groups["teen"] is not None:
        digits, written = TEENS[groups["teen"].lower()], False
    else:
        digits, written = UNITS[groups["unit"].lower()], False
    return Token(match.start(), match.end(), digits, written)


def _joins(gap: str, left: Token, right: Token) -> bool:
    if not gap or len(gap) > MAX_GAP_CHARS or not GAP.fullmatch(gap):
        return False
    if "," in gap:
        # "four, one, one" (spoken digits) and "4111, 1111, ..." (a recognizer's pauses between
        # card groups); never "1,234" or "555-123-4567, 555-..."
        return (all(not t.written or len(t.digits) == 1 for t in (left, right))
                or len(left.digits) == len(right.digits) == 4 and left.written and right.written)
    return True


def digit_runs(text: str) -> list[Run]:
    """Every run of digit tokens in ``text``, in order (a single token is a run of one)."""
    runs: list[Run] = []
    tokens: list[Token] = []
    gaps: list[str] = []
    for match in _TOKEN.finditer(text):
        token = _token(match)
        if tokens:
            gap = text[tokens[-1].end : token.start]
            if _joins(gap, tokens[-1], token):
                tokens.append(token)
                gaps.append(gap)
                continue
            runs.append(Run(tuple(tokens), tuple(gaps)))
        tokens, gaps = [token], []
    if tokens:
        runs.append(Run(tuple(tokens), tuple(gaps)))
    return runs


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum (ISO/IEC 7812-1) used by payment card numbers and Canadian SINs."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0
