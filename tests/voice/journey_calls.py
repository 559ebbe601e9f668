"""A simulated caller's first steps in the order-status journey, shared by the voice tests."""

from __future__ import annotations

from typing import Any

from gateway.voice.simulate import CallDriver
from tests.voice.speech_corpus import utterance


def said(text: str, seed: int) -> bytes:
    """``text`` as a caller says it on a phone line (8 kHz, 25 dB SNR, short pauses around it)."""
    return utterance(text, snr_db=25, seed=seed, lead_s=0.4, trail_s=0.4).pcm


async def ask_about_an_order(session: Any) -> CallDriver:
    """Wait for the greeting, ask about an order: the bot then asks for the order number."""
    driver = CallDriver(session)
    await driver.wait_for_bot(60)
    await driver.feed(said("I want to check the status of my order", 11))
    await driver.wait_for_bot(60)
    assert session.expect.kind == "digits", session.transcript
    return driver
