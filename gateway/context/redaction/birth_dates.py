"""Dates of birth: a date said or typed right after "born", "date of birth", "DOB", "birthday"
(or right before "is my date of birth").

An ordinary date ("reschedule to 14/03/2025", "delivered on March 14") is left alone: the
words that introduce it make it a date of birth. After the keyword and a few filler words
("is", "was", ":", "on", "the", "would be"), the first date form below that matches is masked,
the longest when several do:

- numbers: ``14/03/1985``, ``3/14/85``, ``1985-03-14``, ``14.03.1985``, ``14 03 1985``, ``3/4``;
- words: ``March 14 1985``, ``14th March 1985``, ``the fourteenth of March, nineteen eighty
  five``, ``March fourteenth``, ``Tuesday, March 14, 1985``, ``March 1985``, ``Mar. 14 '85``;
- after "born" (or "year of birth") a year alone: ``1985``, ``nineteen eighty five``, ``two
  thousand and three``;
- digits read one by one ("one four oh three one nine eight five"): a run of 4 to 8 digits.
"""

from __future__ import annotations

import re

from gateway.context.redaction.digits import Run
from gateway.context.redaction.phrases import HESITATIONS, mentions
from gateway.context.redaction.spans import Span

DOB_MASK = "[dob]"
SPOKEN_DIGITS = (4, 8)  # a year to a full DDMMYYYY read digit by digit
DOB_WORDS = ("born", "birth", "dob", "d.o", "d o b", "bday", "b-day")

_UNIT = r"(?:one|two|three|four|five|six|seven|eight|nine)"
_TEEN = r"(?:ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen)"
_TENS = r"(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)"
_ORD_UNIT = r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth)"
_ORD_TEEN = (r"(?:tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth"
             r"|nineteenth)")
_S = r"[\s-]+"
_DAY_WORD = (rf"(?:(?:twenty|thirty){_S}(?:{_ORD_UNIT}|{_UNIT})|twentieth|thirtieth|{_ORD_TEEN}|{_ORD_UNIT}"
             rf"|{_TEEN}|{_UNIT}|twenty|thirty)")
_DAY = rf"(?:the\s+)?(?:[0-3]?\d(?:st|nd|rd|th)?(?!\d)|{_DAY_WORD})(?![a-z])"
_MONTH = (r"(?:january|february|march|april|may|june|july|august|september|october|november|december"
          r"|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\.?(?![a-z])")
_WEEKDAY = r"(?:(?:mon|tues|wednes|thurs|fri|satur|sun)day,?\s+)"
_TWO_DIGITS_SAID = rf"(?:{_TENS}(?:{_S}{_UNIT})?|{_TEEN}|(?:oh|o){_S}{_UNIT})"
_YEAR_WORDS = (
    rf"(?:(?:nineteen|eighteen){_S}(?:hundred(?:{_S}and)?{_S})?{_TWO_DIGITS_SAID}"
    rf"|two{_S}thousand(?:(?:{_S}and)?{_S}(?:{_TENS}(?:{_S}{_UNIT})?|{_TEEN}|{_UNIT}))?"
    rf"|twenty{_S}(?:{_TWO_DIGITS_SAID}))"
)
_YEAR = rf"(?:(?:1[89]|20)\d\d(?!\d)|['’]\d\d(?!\d)|{_YEAR_WORDS}(?![a-z]))"
_YEAR_AFTER_DAY = rf"(?:{_YEAR}|\d\d(?!\d))"
_THEN_YEAR = r"(?:\s*[,/.-]?\s*)(?:of\s+|in\s+)?"
_PART = r"(?:\s*[/.-]\s*|\s+)"  # "14 March", "14-Mar-1985", "Mar/14"

DATE_FORMS = tuple(re.compile("(?i)" + form) for form in (
    r"\d{1,4}\s?[-/.]\s?\d{1,2}\s?[-/.]\s?\d{2,4}(?!\d)",
    r"[0-3]?\d\s[01]?\d\s(?:1[89]|20)\d\d(?!\d)",
    rf"{_WEEKDAY}?{_DAY}{_PART}(?:of\s+)?{_MONTH}(?:{_THEN_YEAR}{_YEAR_AFTER_DAY})?",
    rf"{_WEEKDAY}?{_MONTH}{_PART}{_DAY}(?:{_THEN_YEAR}{_YEAR_AFTER_DAY})?",
    rf"{_MONTH}\s*,?\s*(?:of\s+)?{_YEAR}",
    r"[0-3]?\d\s?[-/.]\s?[0-3]?\d(?![\d/.-])",  # day and month without the year: "born on 3/4"
))
YEAR_ALONE = re.compile("(?i)" + _YEAR)

_KEYS = (r"born|date\s+of\s+birth|birth\s*date|birthdate|d\.?\s?o\.?\s?b\.?|birthday|b-?day"
         r"|year\s+of\s+birth|birth\s+year")
_KEYED = re.compile(
    r"(?i)(?<![a-z])(?P<key>" + _KEYS + r")(?![a-z])"
    r"(?P<fill>(?:\s*(?:[:=,-]|is\b|was\b|['’]s\b|would\s+be\b|it['’]?s\b|it\s+is\b|on\b|in\b"
    r"|back\s+in\b|which\s+is\b|" + HESITATIONS + r"))*)\s*"
)
_BEFORE_KEY = re.compile(
    r"(?i)\s*,?\s*(?:(?:is|was|=|that['’]s|being|as)\s+)?(?:my|the|your|his|her|their)\s+(?:" + _KEYS + r")(?![a-z])"
)


def _longest_date(text: str, pos: int, year_alone: bool) -> int:
    """End of the longest date form starting at ``pos``, or -1."""
    end = -1
    for form in DATE_FORMS:
        match = form.match(text, pos)
        if match is not None:
            end = max(end, match.end())
    if end < 0 and year_alone:
        match = YEAR_ALONE.match(text, pos)
        if match is not None:
            end = match.end()
    return end


def dates_of_birth(text: str, runs: list[Run]) -> list[Span]:
    """Dates introduced as a date of birth (see the module docstring)."""
    if not mentions(text, DOB_WORDS):
        return []
    spans: list[Span] = []
    by_start = {run.start: run for run in runs}
    for match in _KEYED.finditer(text):
        pos = match.end()
        key = match.group("key").lower()
        year_alone = key.startswith("born") or "year" in key  # "born in 1985", "year of birth 1972"
        end = _longest_date(text, pos, year_alone)
        if end > pos:
            spans.append(Span(pos, end, DOB_MASK, "dob"))
            continue
        run = by_start.get(pos)
        if run is not None and SPOKEN_DIGITS[0] <= len(run.digits) <= SPOKEN_DIGITS[1]:
            spans.append(Span(run.start, run.end, DOB_MASK, "dob"))
    if _BEFORE_KEY.search(text):
        spans += _dates_before_key(text)
    return spans


def _dates_before_key(text: str) -> list[Span]:
    """``14/03/1985 is my date of birth``: dates that the words after them introduce."""
    spans = []
    for form in DATE_FORMS:
        for match in form.finditer(text):
            if _BEFORE_KEY.match(text, match.end()):
                spans.append(Span(match.start(), match.end(), DOB_MASK, "dob"))
    return spans
