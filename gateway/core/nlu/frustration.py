"""How frustrated, angry or stuck a caller sounds, from 0 (calm) to 1 (furious).

Used by journeys to offer a human before the caller asks twice (the billing dispute journey
offers an agent above a threshold). The score combines independent cues, each with a weight,
as ``1 - prod(1 - w)``: one mild cue gives a low score, several strong ones approach 1.
"""

from __future__ import annotations

import re

from .text import tokens as normalize_tokens

# Phrases (normalized tokens joined by spaces) and their weights.
_CUES: dict[str, float] = {
    # anger and judgement
    "ridiculous": 0.55, "useless": 0.55, "unacceptable": 0.55, "absurd": 0.5, "outrageous": 0.55,
    "pathetic": 0.55, "terrible": 0.4, "horrible": 0.4, "awful": 0.4, "worst": 0.45, "stupid": 0.5,
    "incompetent": 0.55, "joke": 0.35, "scam": 0.55, "rip off": 0.5, "ripped off": 0.55,
    "robbery": 0.5, "disgusting": 0.5, "disgrace": 0.5, "insane": 0.4, "nonsense": 0.45,
    "frustrated": 0.5, "frustrating": 0.5, "angry": 0.5, "furious": 0.6, "annoyed": 0.4,
    "annoying": 0.4, "upset": 0.35, "livid": 0.6, "pissed": 0.6, "fed up": 0.5, "sick of": 0.5,
    "tired of": 0.4, "had enough": 0.5, "waste of time": 0.5, "wasting my time": 0.55,
    # repetition and being stuck
    "third time": 0.5, "second time": 0.35, "fourth time": 0.55, "again and again": 0.45,
    "over and over": 0.45, "already told you": 0.5, "i already said": 0.45, "i just said": 0.4,
    "i said": 0.2, "for the last time": 0.55, "how many times": 0.5, "keep asking": 0.4,
    "still not": 0.3, "still have not": 0.35, "nobody": 0.25, "no one": 0.15, "every time": 0.25,
    "makes no sense": 0.4, "does not make sense": 0.4, "not listening": 0.45, "not working": 0.25,
    "does not work": 0.25, "not helping": 0.4, "not helpful": 0.4, "can not believe": 0.4,
    "unbelievable": 0.45, "what the": 0.3, "come on": 0.3, "seriously": 0.3, "again": 0.1,
    # wanting out of the machine; complaint and escalation language
    "real person": 0.35, "human being": 0.35, "speak to a manager": 0.45, "supervisor": 0.35,
    "manager": 0.25, "complaint": 0.35, "complain": 0.35, "lawyer": 0.5, "sue": 0.45,
    "cancel my account": 0.3, "close my account": 0.3, "never again": 0.4,
    # swearing
    "damn": 0.45, "dammit": 0.5, "hell": 0.3, "crap": 0.45, "shit": 0.6, "bullshit": 0.65,
    "fuck": 0.7, "fucking": 0.7, "bloody": 0.4, "wtf": 0.6, "bs": 0.4, "screw": 0.35,
    "goddamn": 0.55, "christ": 0.3, "jesus": 0.25, "freaking": 0.4, "frigging": 0.4,
}
_MAX_CUE_WORDS = max(len(c.split()) for c in _CUES)
_EXCLAIM_RE = re.compile(r"!{2,}")
_LONG_TURN_WORDS = 35  # a caller explaining at this length is describing a complex case


def frustration_score(text: str) -> float:
    """0..1: anger and complexity cues (insults, "third time", swearing, shouting, "!!!")."""
    if not text.strip():
        return 0.0
    weights: list[float] = []
    words = normalize_tokens(text)
    i = 0
    while i < len(words):
        for size in range(min(_MAX_CUE_WORDS, len(words) - i), 0, -1):
            phrase = " ".join(words[i : i + size])
            weight = _CUES.get(phrase)
            if weight is not None:
                weights.append(weight)
                i += size
                break
        else:
            i += 1
    letters = [c for c in text if c.isalpha()]
    if len(letters) >= 8 and sum(c.isupper() for c in letters) / len(letters) > 0.7:
        weights.append(0.45)  # shouting
    if _EXCLAIM_RE.search(text):
        weights.append(0.3)
    elif "!" in text:
        weights.append(0.1)
    if len(words) >= _LONG_TURN_WORDS:
        weights.append(0.2)
    calm = 1.0
    for weight in weights:
        calm *= 1.0 - weight
    return round(1.0 - calm, 3)
