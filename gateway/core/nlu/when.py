"""When to call back: "in an hour", "at 3 pm", "tomorrow morning", "as soon as possible".

``parse_when(text, now)`` answers a datetime (``now``'s time zone), :data:`ASAP` for the first
moment the queue can serve, or None when the text names no time. A clock time without a day is
its next occurrence (tomorrow when it has passed today); a bare hour from 1 to 7 means the
afternoon (a callback at "3" is 3 pm, not 3 am); parts of the day map to a working hour.
"""

from __future__ import annotations

import datetime as dt
import re

from .numbers import parse_cardinal
from .text import tokens as normalize_tokens

ASAP = "asap"
ASAP_PHRASES = ("as soon as possible", "asap", "first available", "right away", "straight away", "any time",
                "anytime", "whenever", "as soon as you can", "soonest", "now")
PARTS_OF_DAY = {"morning": 9, "noon": 12, "midday": 12, "lunchtime": 12, "afternoon": 14, "evening": 18}
_CLOCK = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s*(a\.?\s*m\.?|p\.?\s*m\.?|o'?clock)?(?![\d:])", re.I)
_IN = re.compile(r"\bin\s+(?:(an?|\d+|[a-z]+(?:\s[a-z]+)?)\s+)?(half\s+an?\s+)?(minutes?|mins?|hours?|hrs?)\b", re.I)


def _amount(words: str) -> float | None:
    words = words.strip().lower()
    if words in ("a", "an", ""):
        return 1.0
    if words.isdigit():
        return float(words)
    tokens = normalize_tokens(words)
    group = parse_cardinal(tokens, 0) if tokens else None
    return float(group.value) if group is not None and group.end == len(tokens) else None


def _digits_for_words(text: str) -> str:
    """'at three thirty pm' -> 'at 3:30 pm' (clock times said in words, after "at")."""
    def replace(match: re.Match[str]) -> str:
        tokens = normalize_tokens(match.group(1))
        group = parse_cardinal(tokens, 0) if tokens else None
        if group is None or not 1 <= group.value <= 12:
            return match.group(0)
        rest = tokens[group.end:]
        minute = parse_cardinal(rest, 0) if rest else None
        clock = f"{group.value}:{minute.value:02d}" if minute is not None and minute.value < 60 else str(group.value)
        return f"at {clock}"
    return re.sub(r"\bat ((?:[a-z]+)(?: [a-z]+){0,2}?)(?=$| [ap]\.?m\b| o'?clock\b| please\b| tomorrow\b| today\b|[,.])",
                  replace, text)


def _hour(hour: int, minute: int, meridiem: str) -> tuple[int, int] | None:
    m = meridiem.replace(".", "").replace(" ", "").lower()
    if m == "pm" and hour < 12:
        hour += 12
    elif m == "am" and hour == 12:
        hour = 0
    elif not m.endswith(("am", "pm")) and 1 <= hour <= 7:
        hour += 12  # a callback "at three" is in the afternoon
    return (hour, minute) if 0 <= hour < 24 and 0 <= minute < 60 else None


def parse_when(text: str, now: dt.datetime) -> dt.datetime | str | None:
    """The moment ``text`` asks to be called back (see the module docstring)."""
    lowered = " ".join(text.lower().replace("-", " ").split())
    if any(re.search(rf"\b{re.escape(p)}\b", lowered) for p in ASAP_PHRASES):
        return ASAP
    if re.search(r"\bin (?:a )?half an? hour\b", lowered):
        return now + dt.timedelta(minutes=30)
    lowered = _digits_for_words(lowered)
    relative = _IN.search(lowered)
    if relative:
        amount = 0.5 if relative.group(2) else _amount(relative.group(1) or "")
        if amount is not None:
            unit = 60 if relative.group(3).startswith("h") else 1
            return now + dt.timedelta(minutes=amount * unit)
    day = now.date() + dt.timedelta(days=1) if "tomorrow" in lowered else None
    clock = next((m for m in _CLOCK.finditer(lowered) if m.group(3) or " at " + m.group(0) in " " + lowered
                  or lowered.startswith(m.group(0))), None)
    at: tuple[int, int] | None = None
    if clock is not None:
        at = _hour(int(clock.group(1)), int(clock.group(2) or 0), clock.group(3) or "")
    else:
        part = next((h for word, h in PARTS_OF_DAY.items() if re.search(rf"\b{word}\b", lowered)), None)
        if part is not None:
            at = (part, 0)
    if at is None:
        return dt.datetime.combine(day, dt.time(9, 0), now.tzinfo) if day else None
    when = dt.datetime.combine(day or now.date(), dt.time(*at), now.tzinfo)
    if day is None and when <= now:
        when += dt.timedelta(days=1)
    return when
