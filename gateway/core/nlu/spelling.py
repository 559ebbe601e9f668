"""Spelled letters and codes: "a as in alpha b c one two", "b for bravo", "double t".

Callers spell names, postcodes and reference codes letter by letter, with the NATO alphabet,
with "X as in <word>", and with "double"/"triple". Speech recognisers write a spoken letter as
the letter ("b") or as a word that sounds like it ("bee", "see", "are", "why"). The result is the
longest run of spelled units in the text, uppercased, digits included.
"""

from __future__ import annotations

from .numbers import REPEATS, TEENS, TENS, UNITS, ZERO_WORDS
from .text import tokens as normalize_tokens

NATO = {
    "alpha": "A", "alfa": "A", "bravo": "B", "charlie": "C", "delta": "D", "echo": "E",
    "foxtrot": "F", "golf": "G", "hotel": "H", "india": "I", "juliet": "J", "juliett": "J",
    "kilo": "K", "lima": "L", "mike": "M", "november": "N", "oscar": "O", "papa": "P",
    "quebec": "Q", "romeo": "R", "sierra": "S", "tango": "T", "uniform": "U", "victor": "V",
    "whiskey": "W", "whisky": "W", "xray": "X", "yankee": "Y", "zulu": "Z",
}
# How recognisers write a letter said on its own.
LETTER_SOUNDS = {
    "bee": "B", "be": "B", "see": "C", "sea": "C", "cee": "C", "dee": "D", "ee": "E", "eff": "F",
    "gee": "G", "aitch": "H", "haitch": "H", "jay": "J", "kay": "K", "el": "L", "ell": "L",
    "em": "M", "en": "N", "pee": "P", "queue": "Q", "cue": "Q", "are": "R", "ar": "R", "ess": "S",
    "tee": "T", "tea": "T", "vee": "V", "ex": "X", "why": "Y", "zed": "Z", "zee": "Z",
    "oh": "O",
}
# Words that may sit between spelled units without ending the run.
_SEPARATORS = frozenset({"dash", "hyphen", "space", "then", "and", "comma", "slash"})
# "A" and "I" are also words; alone they are not a spelling.
_WORD_LETTERS = frozenset({"a", "i"})


def parse_spelled(text: str) -> str | None:
    """The spelled code in ``text`` ("a as in alpha b c one two" -> "ABC12"), or None."""
    toks = normalize_tokens(text)
    runs: list[list[str]] = []
    current: list[str] = []
    current_tokens: list[str] = []
    i = 0
    while i < len(toks):
        unit = _unit_at(toks, i)
        if unit is not None and _is_soft(toks, i, unit[1]):
            # "see", "are", "why": a letter only after another letter and before one (or the end)
            following = _unit_at(toks, unit[1]) if unit[1] < len(toks) else None
            if not current or (unit[1] < len(toks) and following is None):
                unit = None
        if unit is not None:
            chars, end = unit
            current.append(chars)
            current_tokens.extend(toks[i:end])
            i = end
            continue
        if current and toks[i] in _SEPARATORS and i + 1 < len(toks) and _unit_at(toks, i + 1) is not None:
            i += 1
            continue
        _close(runs, current, current_tokens)
        current, current_tokens = [], []
        i += 1
    _close(runs, current, current_tokens)
    runs = [run for run in runs if any(c.isalpha() for c in "".join(run))]
    if not runs:
        return None  # digits alone are extract_digits' business
    best = max(runs, key=len)  # the first of the longest runs
    return "".join(best)


def _close(runs: list[list[str]], units: list[str], unit_tokens: list[str]) -> None:
    if not units:
        return
    if len(units) == 1 and len(unit_tokens) == 1 and unit_tokens[0] in _WORD_LETTERS:
        return  # a lone "a" or "I" is a word
    runs.append(units)


def _letter(tok: str) -> str | None:
    if len(tok) == 1 and tok.isalpha():
        return tok.upper()
    return NATO.get(tok) or LETTER_SOUNDS.get(tok)


def _unit_at(toks: list[str], i: int) -> tuple[str, int] | None:
    """One spelled unit at ``toks[i]``: its characters and the index after it."""
    tok = toks[i]
    nxt = toks[i + 1] if i + 1 < len(toks) else ""
    if tok in REPEATS and nxt:
        if nxt in ("u", "you"):  # "double u" is W
            return "W", i + 2
        inner = _unit_at(toks, i + 1)
        if inner is not None and len(inner[0]) == 1:
            return inner[0] * REPEATS[tok], inner[1]
        return None
    if tok in UNITS:
        return str(UNITS[tok]), i + 1
    if tok in TEENS or tok in TENS:
        return None  # "twenty" in a spelling is not a character
    if tok.isdigit():
        return tok, i + 1
    if tok in ZERO_WORDS and tok != "o" and tok != "oh":
        return "0", i + 1
    letter = _letter(tok)
    if letter is None:
        return None
    # "a as in alpha", "b for bravo", "c like charlie": the word confirms the letter.
    for intro in (("as", "in"), ("for",), ("like",), ("as",)):
        k = i + 1 + len(intro)
        if tuple(toks[i + 1 : k]) == intro and k < len(toks) and toks[k][:1].upper() == letter[:1]:
            return letter, k + 1
    return letter, i + 1


def _is_soft(toks: list[str], i: int, end: int) -> bool:
    """A letter written as an ordinary word ("see", "are"), not confirmed by "as in"."""
    return end == i + 1 and toks[i] in LETTER_SOUNDS
