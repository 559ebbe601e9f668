"""Small helpers shared by the telephony tests."""

from __future__ import annotations

import asyncio
from typing import Callable


async def until(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Wait until ``cond()`` is true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(interval)
