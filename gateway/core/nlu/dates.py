"""Spoken and written dates: "March third", "the 3rd of March 1985", "03/04/1985", "next Tuesday".

Numeric dates are read month first ("03/04/1985" is March 4th) unless the first field cannot
be a month ("25/12/1990"); ISO dates ("1985-03-04") are read as written. A date said without a
year means its next occurrence (today included), which is what a caller rescheduling an
appointment or a delivery means; a date of birth is said with its year. A weekday means its
next occurrence after today ("next Tuesday" on a Sunday is in two days), and "this Tuesday"
on a Tuesday is today.
"""

from __future__ import annotations

import datetime as dt
import re

from .numbers import (
    REPEATS,
    TEENS,
    TENS,
    UNITS,
    ZERO_WORDS,
    is_number_word,
    number_groups,
    ordinal_value,
    parse_cardinal,
)
from .text import tokens as normalize_tokens

MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4,
    "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8, "september": 9,
    "sept": 9, "sep": 9, "october": 10, "oct": 10, "november": 11, "nov": 11, "december": 12, "dec": 12,
}
# Abbreviations and "may" are also ordinary words; they only count next to a day or a year.
_WEAK_MONTHS = frozenset({"may", "mar", "jan", "jun", "jul", "aug", "sep", "dec", "oct", "nov", "apr", "feb"})
WEEKDAYS = {
    "monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5, "sunday": 6,
    "mon": 0, "tue": 1, "tues": 1, "wed": 2, "thu": 3, "thur": 3, "thurs": 3, "fri": 4, "sat": 5, "sun": 6,
}
_NUMERIC_RE = re.compile(r"\b(\d{1,2})\s*[/.\-]\s*(\d{1,2})\s*[/.\-]\s*(\d{4}|\d{2})\b")
_ISO_RE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_UNIT_DAYS = {"day": 1, "days": 1, "week": 7, "weeks": 7}


def parse_date(text: str, today: dt.date | None = None) -> dt.date | None:
    """The date ``text`` names, or None. ``today`` anchors relative dates (default: the real today)."""
    today = today or dt.date.today()
    found = _numeric_date(text)
    if found is not None:
        return found
    toks = normalize_tokens(text)
    return _spoken_date(toks, today) or _relative_date(toks, today) or _digit_string_date(toks, today)


def _safe_date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _full_year(year: int, today: dt.date | None = None) -> int:
    """Two-digit years: the most recent past such year ("85" -> 1985, "05" -> 2005)."""
    if year >= 100:
        return year
    century = (today or dt.date.today()).year // 100 * 100
    return century + year if century + year <= (today or dt.date.today()).year else century - 100 + year


def _numeric_date(text: str) -> dt.date | None:
    m = _ISO_RE.search(text)
    if m:
        return _safe_date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    m = _NUMERIC_RE.search(text)
    if not m:
        return None
    first, second, year = int(m.group(1)), int(m.group(2)), _full_year(int(m.group(3)))
    if first > 12 >= second:
        return _safe_date(year, second, first)
    return _safe_date(year, first, second)


def _day_at(toks: list[str], i: int) -> tuple[int, int] | None:
    """A day of the month at ``toks[i]``: "third", "3rd", "3", "twenty three", "the third"."""
    if i < len(toks) and toks[i] == "the":
        i += 1
    ordinal = ordinal_value(toks, i)
    if ordinal is not None:
        value, end = ordinal
    else:
        group = parse_cardinal(toks, i)
        if group is None or group.value >= 100 or (group.end - group.start > 2):
            return None
        value, end = group.value, group.end
    return (value, end) if 1 <= value <= 31 else None


def _year_at(toks: list[str], i: int) -> tuple[int, int] | None:
    """A year at ``toks[i]``: "1985", "nineteen eighty five", "two thousand five", "twenty twenty four", "'85"."""
    if i < len(toks) and toks[i] in ("of", "in"):
        i += 1
    if i >= len(toks):
        return None
    tok = toks[i]
    if tok.isdigit():
        if len(tok) == 4:
            return int(tok), i + 1
        if len(tok) == 2:
            return _full_year(int(tok)), i + 1
        return None
    first = parse_cardinal(toks, i)
    if first is None:
        return None
    if first.value >= 1000:  # "two thousand (and) five"
        return (first.value, first.end) if first.value < 2100 else None
    if 10 <= first.value <= 20 and first.end < len(toks):
        # "nineteen eighty five", "twenty twenty four", "nineteen oh five"
        j = first.end
        if toks[j] in ZERO_WORDS and j + 1 < len(toks) and toks[j + 1] in UNITS:
            return first.value * 100 + UNITS[toks[j + 1]], j + 2
        second = parse_cardinal(toks, j)
        if second is not None and 10 <= second.value < 100:
            return first.value * 100 + second.value, second.end
        if toks[j] == "hundred":
            return first.value * 100, j + 1
    if 20 <= first.value < 100 and first.end - first.start <= 2 and (toks[i] in TENS or toks[i] in TEENS):
        return _full_year(first.value), first.end  # "eighty five"
    return None


def _month_at(toks: list[str], i: int) -> int | None:
    return MONTHS.get(toks[i]) if i < len(toks) else None


def _spoken_date(toks: list[str], today: dt.date) -> dt.date | None:
    n = len(toks)
    for i in range(n):
        month = _month_at(toks, i)
        if month is not None:
            # MONTH [the] DAY [of]? [,] [YEAR]
            day = _day_at(toks, i + 1)
            if day is not None:
                year = _year_at(toks, day[1])
                return _resolve(year[0] if year else None, month, day[0], today)
            if toks[i] in _WEAK_MONTHS:
                continue
            year = _year_at(toks, i + 1)  # "March 1985" has no day
            if year is not None:
                return None
        else:
            day = _day_at(toks, i)
            if day is None:
                continue
            j = day[1]
            if j < n and toks[j] == "of":
                j += 1
            month = _month_at(toks, j)
            if month is None:
                continue
            year = _year_at(toks, j + 1)
            return _resolve(year[0] if year else None, month, day[0], today)
    return _day_only(toks, today)


def _day_only(toks: list[str], today: dt.date) -> dt.date | None:
    """ "on the fifth", "the twenty first": the next such day of a month."""
    for i, tok in enumerate(toks):
        if tok == "the" and (i == 0 or toks[i - 1] in ("on", "for", "to", "until", "by")):
            ordinal = ordinal_value(toks, i + 1)
            if ordinal is None or not 1 <= ordinal[0] <= 31:
                continue
            year, month = today.year, today.month
            for _ in range(13):
                candidate = _safe_date(year, month, ordinal[0])
                if candidate is not None and candidate >= today:
                    return candidate
                month += 1
                if month == 13:
                    year, month = year + 1, 1
    return None


def _resolve(year: int | None, month: int, day: int, today: dt.date) -> dt.date | None:
    if year is not None:
        return _safe_date(year, month, day)
    candidate = _safe_date(today.year, month, day)
    if candidate is not None and candidate < today:
        candidate = _safe_date(today.year + 1, month, day)
    return candidate


def _digit_string_date(toks: list[str], today: dt.date) -> dt.date | None:
    """A date read as eight digits, month first: "oh three oh four nineteen eighty five" (MMDDYYYY)."""
    if any(not (is_number_word(t) or t in ZERO_WORDS or t in REPEATS) for t in toks):
        return None  # only when the whole answer is digits
    groups = number_groups(toks, homophones=True)
    digits = "".join(g.digits for g in groups)
    if len(digits) != 8:
        return None
    first, second, year = int(digits[:2]), int(digits[2:4]), int(digits[4:])
    if not 1900 <= year <= today.year + 1:
        return None
    if first > 12 >= second:
        return _safe_date(year, second, first)
    return _safe_date(year, first, second)


def _offset_at(toks: list[str], i: int) -> dt.timedelta | None:
    """ "in two weeks", "three days from now", "a week from today" starting at ``toks[i]``."""
    start = i + 1 if toks[i] == "in" else i
    amount = parse_cardinal(toks, start)
    if amount is None and start < len(toks) and toks[start] in ("a", "one"):
        count, j = 1, start + 1
    elif amount is not None:
        count, j = amount.value, amount.end
    else:
        return None
    if j >= len(toks) or toks[j] not in _UNIT_DAYS or count > 366:
        return None
    from_now = toks[j + 1 : j + 3] in (["from", "now"], ["from", "today"])
    if toks[i] != "in" and not from_now:
        return None
    return dt.timedelta(days=count * _UNIT_DAYS[toks[j]])


def _relative_date(toks: list[str], today: dt.date) -> dt.date | None:
    text = " ".join(toks)
    if "day after tomorrow" in text:
        return today + dt.timedelta(days=2)
    if "day before yesterday" in text:
        return today - dt.timedelta(days=2)
    for i in range(len(toks)):  # before "today": "a week from today"
        offset = _offset_at(toks, i)
        if offset is not None:
            return today + offset
    for word, delta in (("today", 0), ("tonight", 0), ("tomorrow", 1), ("tommorow", 1), ("yesterday", -1)):
        if word in toks:
            return today + dt.timedelta(days=delta)
    for i, tok in enumerate(toks):
        weekday = WEEKDAYS.get(tok)
        if weekday is not None and (len(tok) > 3 or (i > 0 and toks[i - 1] in ("next", "this", "on"))):
            ahead = (weekday - today.weekday()) % 7
            prev = toks[i - 1] if i > 0 else ""
            if ahead == 0 and prev != "this":
                ahead = 7
            if prev == "next" and i > 1 and toks[i - 2] == "week":
                ahead += 7
            return today + dt.timedelta(days=ahead)
        if tok == "next" and i + 1 < len(toks) and toks[i + 1] == "week":
            return today + dt.timedelta(days=7)
    return None
