"""Backchannels: the "uh-huh", "yeah", "okay" a listener says while the bot talks.

A person telling something does not stop for "uh-huh"; they stop for "wait, that's wrong". The
session pauses the bot at the first frames of caller speech anyway (a real interruption must
silence it within 150 ms), then decides with the transcript of that short utterance: a
backchannel lets the bot go on from where it paused, anything else (or speech longer than
``backchannel_max_ms``) drops the rest of the answer as a barge-in always did. Over a question
(an ``Ask``) every word is an answer, so there is no backchannel there.
"""

from __future__ import annotations

from gateway.voice.asr.base import normalize_words

BACKCHANNEL_WORDS = frozenset({
    "uh", "huh", "uhhuh", "mhm", "mmhmm", "mm", "hmm", "hm", "mmm", "hmmm", "yeah", "yes", "yep", "yup", "ok",
    "okay", "right", "sure", "alright", "cool", "great", "good", "fine", "aha", "ah", "oh", "wow", "nice",
    "perfect", "gotcha", "thanks", "true", "exactly",
})
"""Words that acknowledge by themselves."""
BACKCHANNEL_PHRASES = ("all right", "i see", "got it", "thank you")
"""Acknowledgements of two words whose parts are not one alone ("I ...", "got ...")."""
MAX_BACKCHANNEL_WORDS = 3
"""Longer than this it is a sentence, not a nod."""


def is_backchannel(text: str) -> bool:
    """The transcript is only a listener's acknowledgement ("Uh-huh.", "Okay.", "Yeah, right.")."""
    words = normalize_words(text.replace("-", ""))
    if not words or len(words) > MAX_BACKCHANNEL_WORDS:
        return False
    joined = " ".join(words)
    for phrase in BACKCHANNEL_PHRASES:
        joined = joined.replace(phrase, "okay")
    return all(w in BACKCHANNEL_WORDS for w in joined.split())
