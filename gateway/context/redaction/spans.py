"""What a rule found: a stretch of text and what to write instead; and which of overlapping
findings wins."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """Characters ``start:end`` of the text are replaced by ``mask``; ``kind`` names the rule."""

    start: int
    end: int
    mask: str
    kind: str


def choose(spans: list[Span]) -> list[Span]:
    """Non-overlapping spans in text order, the longest first (an IBAN over the card-like
    digits inside it); among equal lengths the span found first wins (rules run in order)."""
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start - spans[i].end, i))
    taken: list[Span] = []
    for i in order:
        span = spans[i]
        if all(span.end <= t.start or span.start >= t.end for t in taken):
            taken.append(span)
    return sorted(taken, key=lambda s: s.start)
