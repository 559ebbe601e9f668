"""Yes and no in their many spoken forms.

Callers rarely say a bare "yes": they say "yeah", "yep", "sure", "that's right", "uh huh",
"nope", "not really", "no thanks". A few words are only a yes or a no in the right place:
"right" and "correct" at the start of an answer, "no" as an answer rather than a determiner
("I have no idea" is not a no). Hesitation ("I'm not sure", "I don't know", "maybe") and
contradictions ("yes and no") give None, so the journey asks again.
"""

from __future__ import annotations

import re

from .text import clauses

# Phrases checked first (longest first); each is a yes (True), a no (False) or unsure (None).
_PHRASES: dict[str, bool | None] = {
    # unsure
    "not sure": None, "no idea": None, "do not know": None, "dunno": None, "maybe": None,
    "perhaps": None, "not certain": None, "i guess": None, "possibly": None, "no clue": None,
    "not quite sure": None, "i do not know": None, "i do not remember": None, "do not remember": None,
    "i can not remember": None, "can not remember": None, "i am not sure": None, "i have no idea": None,
    "not that i know": None, "kind of": None, "sort of": None, "yes and no": None,
    # no
    "not really": False, "not at all": False, "no way": False, "no thanks": False, "no thank you": False,
    "not right": False, "not correct": False, "not true": False, "is not": False, "it is not": False,
    "that is not": False, "that is wrong": False, "that is incorrect": False, "not me": False,
    "i do not": False, "do not": False, "i did not": False, "did not": False, "i have not": False,
    "not now": False, "not today": False, "not yet": False, "absolutely not": False,
    "definitely not": False, "of course not": False, "certainly not": False, "please do not": False,
    "i would rather not": False, "rather not": False, "not interested": False, "negative": False,
    "never": False, "not ok": False, "not okay": False, "no no": False, "i am good": False,
    "wrong": False, "incorrect": False, "nah": False, "nope": False, "no": False, "naw": False,
    "i do not think so": False, "i do not believe so": False, "i would not": False,
    # yes
    "yes": True, "yeah": True, "yea": True, "yep": True, "yup": True, "ya": True, "yah": True,
    "yes please": True, "yes sir": True, "uh huh": True, "uh hu": True, "mhm": True, "mm hmm": True,
    "mmhmm": True, "uhhuh": True, "i think so": True, "i believe so": True, "i guess so": True,
    "sure": True, "sure thing": True, "of course": True, "certainly": True,
    "absolutely": True, "definitely": True, "correct": True, "that is correct": True,
    "that is right": True, "right": True, "exactly": True, "indeed": True, "affirmative": True,
    "ok": True, "okay": True, "alright": True, "all right": True, "fine": True, "that is fine": True,
    "go ahead": True, "please do": True, "do it": True, "sounds good": True, "sounds great": True,
    "that works": True, "works for me": True, "it is": True, "i do": True, "i did": True,
    "true": True, "you bet": True, "why not": True, "yes it is": True, "please": True,
    "no problem": True, "no worries": True, "that would be great": True, "perfect": True,
    "that is it": True, "i would like that": True, "i agree": True, "confirm": True, "confirmed": True,
    "go on": True, "you got it": True, "fine by me": True, "i would love that": True, "i would love to": True,
    "i suppose so": True, "that is me": True, "it is me": True,
}
# Words that are a yes or no only as the answer itself: the first words of a clause, or the
# whole (short) clause. "correct my address" and "turn right" are not yeses.
_WEAK = frozenset({"right", "correct", "fine", "ok", "okay", "true", "please", "confirm", "sure",
                   "wrong", "it is", "i do", "i did", "do it", "do not", "did not", "never",
                   "perfect", "is not", "i do not", "i did not"})
# After "no" or "yes", these words show it is an answer ("no thanks", "no I want ...");
# any other word makes "no" a determiner ("no idea", "no money").
_ANSWER_FOLLOWERS = frozenset({
    "thanks", "thank", "i", "it", "that", "this", "not", "sorry", "please", "sir", "maam", "no",
    "nope", "you", "we", "my", "the", "its", "just", "yes", "yeah", "but", "and", "actually",
    "wait", "there", "is", "was", "they", "he", "she", "definitely", "absolutely", "correct",
    "right", "so", "go", "do", "can", "could", "would", "let", "we", "our", "of", "to", "only",
})
# Before a "no" or "yes" in mid-clause, these words show it is an answer ("I said no").
_ANSWER_LEADERS = frozenset({"said", "say", "is", "answer", "but", "oh", "and"})
_EXPLICIT_RE = re.compile(r"\b(yes|yeah|yep|yup|no|nope|nah)\b")
# After a weak cue, these words keep it an answer ("right, thanks"; not "correct my address").
_WEAK_FOLLOWERS = frozenset({"thanks", "thank", "that", "it", "is", "sir", "maam", "yes", "yeah", "so",
                             "please", "exactly", "absolutely", "i", "we", "go", "you", "thats", "sure",
                             "ok", "okay", "then", "right", "fine", "correct"})
# Words that may come before a weak cue without making it part of a longer sentence ("ok sure").
_LEADING = frozenset({"that", "oh", "well", "yes", "yeah", "yep", "no", "nope", "and", "but", "so", "ok",
                      "okay", "alright", "right", "sure", "fine", "then", "all"})
# phrases by first word, longest first
_BY_FIRST_WORD: dict[str, list[tuple[str, list[str]]]] = {}
for _phrase in sorted(_PHRASES, key=lambda p: -len(p.split())):
    _BY_FIRST_WORD.setdefault(_phrase.split()[0], []).append((_phrase, _phrase.split()))


def parse_yes_no(text: str) -> bool | None:
    """True for a yes, False for a no, None when the text is neither, unsure, or both."""
    found: list[bool] = []
    unsure = False
    for clause in clauses(text):
        verdict = _clause_polarity(clause)
        if verdict == "unsure":
            unsure = True
        elif isinstance(verdict, bool):
            found.append(verdict)
    if not found:
        return None
    if len(set(found)) > 1:
        return None
    if unsure and not _EXPLICIT_RE.search(text.lower()):
        return None  # "I'm not sure, maybe ok"
    return found[0]


def _clause_polarity(words: list[str]) -> bool | str | None:
    """The polarity of one clause: True, False, "unsure" or None (no cue)."""
    verdicts: list[bool] = []
    unsure = False
    i = 0
    n = len(words)
    while i < n:
        match = _phrase_at(words, i)
        if match is None:
            i += 1
            continue
        phrase, length = match
        value = _PHRASES[phrase]
        if value is None:
            unsure = True
        elif _counts(phrase, words, i, length):
            verdicts.append(value)
        i += length
    if unsure and not verdicts:
        return "unsure"
    if not verdicts:
        return None
    if len(set(verdicts)) > 1:
        return None  # "yeah no", "no that is right": ask again rather than guess
    return verdicts[0]


def _phrase_at(words: list[str], i: int) -> tuple[str, int] | None:
    for phrase, parts in _BY_FIRST_WORD.get(words[i], ()):
        if words[i : i + len(parts)] == parts:
            return phrase, len(parts)
    return None


def _counts(phrase: str, words: list[str], i: int, length: int) -> bool:
    """Whether a matched cue is an answer here rather than an ordinary word."""
    end = i + length
    if phrase in ("no", "yes"):
        if end == len(words) or i == 0:
            return end == len(words) or words[end] in _ANSWER_FOLLOWERS or phrase == "yes"
        return words[end] in _ANSWER_FOLLOWERS and words[i - 1] in _ANSWER_LEADERS
    if phrase in _WEAK:
        at_start = i <= 3 and all(w in _LEADING for w in words[:i])
        return at_start and (end == len(words) or words[end] in _WEAK_FOLLOWERS)
    return True
