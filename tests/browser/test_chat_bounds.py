"""Bad input in the browser: an oversized message and a flood are refused with a clear message,
and what the customer typed stays in the box (nothing lost)."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from gateway.core.events import ChatMessage
from tests.digital.fake_core import FakeCore
from tests.digital.helpers import start

pytestmark = pytest.mark.browser


async def test_oversized_and_flooded_messages_are_kept_for_the_customer(tmp_path, browser):
    core = FakeCore()
    runner = await start(tmp_path, core, chat={"max_message_chars": 40, "messages_per_minute": 3})
    try:
        page = await browser.new_page()
        await page.goto(runner.url + "/chat")
        await expect(page.locator("#log")).to_contain_text("How can I help?")
        long_text = "a" * 41
        await page.fill("#text", long_text)
        await page.press("#text", "Enter")
        await expect(page.locator("#log")).to_contain_text("the limit is 40")
        assert await page.input_value("#text") == long_text  # kept in the box
        for i in range(3):
            await page.fill("#text", f"message {i}")
            await page.press("#text", "Enter")
            await expect(page.locator("#log")).to_contain_text(f"You said: message {i}")
        await page.fill("#text", "one too many")
        await page.press("#text", "Enter")
        await expect(page.locator(".refusal").last).to_contain_text("too many messages")
        await expect(page.locator("#text")).to_have_value("one too many")
        delivered = [e.text for _, e in core.events if isinstance(e, ChatMessage)]
        assert delivered == ["message 0", "message 1", "message 2"]
    finally:
        await runner.close()
