"""Bad input in the browser: an oversized message and a flood are refused with a clear message,
and what the customer typed stays in the box (nothing lost). The real core answers the rest."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.digital.helpers import logged, real_gateway

pytestmark = pytest.mark.browser

ANSWERED = [("where is my order", "What is your order number?"), ("2 0 0 0 1", "standing desk"),
            ("yes", "Here is the tracking link.")]
"""Three messages within the limit, and a piece of the core's answer to each."""


async def test_oversized_and_flooded_messages_are_kept_for_the_customer(tmp_path, browser):
    async with real_gateway(tmp_path, chat={"max_message_chars": 40, "messages_per_minute": 3}) as (core, runner):
        page = await browser.new_page()
        await page.goto(runner.url + "/chat")
        await expect(page.locator("#log")).to_contain_text("How can I help you today?")
        long_text = "a" * 41
        await page.fill("#text", long_text)
        await page.press("#text", "Enter")
        await expect(page.locator("#log")).to_contain_text("the limit is 40")
        assert await page.input_value("#text") == long_text  # kept in the box
        for text, answer in ANSWERED:
            await page.fill("#text", text)
            await page.press("#text", "Enter")
            await expect(page.locator("#log")).to_contain_text(answer)
        await page.fill("#text", "one too many")
        await page.press("#text", "Enter")
        await expect(page.locator(".refusal").last).to_contain_text("too many messages")
        await expect(page.locator("#text")).to_have_value("one too many")
        delivered = [e.payload["text"] for e in await logged(core, "ChatMessage")]
        assert delivered == [text for text, _ in ANSWERED]
