"""Playwright driving Debian's chromium (never a downloaded browser), one fresh profile per test."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import AsyncIterator

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[object]:
    """A persistent chromium context on a fresh user-data-dir."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (make setup installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            await context.close()
