"""Fixed prompts synthesized before a caller needs them.

Every journey's voice wording that has no ``{slot}`` in it (greetings, questions, retries, help,
goodbyes) is synthesized once at the call rate into the prompt cache (memory and disk), so the
first caller to reach a prompt hears it without waiting for synthesis. It runs in the background
after the pipeline starts, one prompt at a time, and only while no call is in progress: live
prompts never queue behind it. The disk cache keeps the result across restarts, so a gateway
that restarts on the same data directory finds them there and synthesizes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Iterable, Iterator

from gateway.core.channels import Channel
from gateway.core.journeys import StepBase, load_journeys

log = logging.getLogger(__name__)

MAX_PROMPTS = 500
"""Prompts pre-synthesized at most (the shipped journeys have about 120)."""
IDLE_POLL_SECONDS = 1.0
"""While a call is in progress, how often the warm-up looks again."""


def fixed_prompts(directory: Any) -> list[str]:
    """The voice wording of every journey prompt without slots, each once, in journey order."""
    journeys = load_journeys(directory)
    seen: dict[str, None] = {}
    for journey in journeys.journeys.values():
        for text in _texts(journey.steps):
            if "{" not in text and text not in seen:
                seen[text] = None
    return list(seen)[:MAX_PROMPTS]


def _texts(steps: Iterable[StepBase]) -> Iterator[str]:
    for step in steps:
        for prompt in step.prompts():
            text = prompt.for_channel(Channel.VOICE).strip()
            if text:
                yield text


async def warm_prompts(tts: Any, texts: list[str], sample_rate: int, busy: Callable[[], bool]) -> int:
    """Synthesize ``texts`` at ``sample_rate`` into ``tts``'s caches while ``busy()`` is false;
    returns how many were done. A prompt that fails is skipped (it is synthesized when needed)."""
    done = 0
    for text in texts:
        while busy():
            await asyncio.sleep(IDLE_POLL_SECONDS)
        try:
            await tts.synthesize(text, sample_rate)
            done += 1
        except Exception as exc:  # noqa: BLE001 - a warm-up failure costs that prompt its head start only
            log.warning("prompt warm-up skipped %r: %s", text[:60], exc)
    return done
