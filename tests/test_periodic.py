"""gateway.periodic: background rounds that survive a bad round, wake on a kick and stop on close."""

from __future__ import annotations

import asyncio
import logging

from gateway.periodic import Periodic


async def test_a_failing_round_is_logged_and_the_next_one_runs(caplog):
    rounds: list[int] = []

    async def tick() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise OSError("disk away for a moment")
        if len(rounds) == 2:
            raise KeyError("a bug")

    ticker = Periodic("test rounds", tick, lambda: 0.01, expected=(OSError,))
    with caplog.at_level(logging.WARNING, logger="gateway.periodic"):
        ticker.start()
        for _ in range(200):
            if len(rounds) >= 4:
                break
            await asyncio.sleep(0.01)
        await ticker.close()
    assert len(rounds) >= 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("disk away" in r.getMessage() for r in warnings)
    assert errors and errors[0].exc_info is not None  # the unexpected one with its traceback
    assert not ticker.running


async def test_a_kick_runs_a_round_before_the_period_ends():
    rounds: list[float] = []
    loop = asyncio.get_running_loop()

    async def tick() -> None:
        rounds.append(loop.time())

    ticker = Periodic("kicked", tick, lambda: 60.0, wait_first=True)
    ticker.start()
    await asyncio.sleep(0.05)
    assert rounds == []  # waits a period (60 s) before the first round
    started = loop.time()
    ticker.kick()
    for _ in range(100):
        if rounds:
            break
        await asyncio.sleep(0.01)
    await ticker.close()
    assert len(rounds) == 1 and rounds[0] - started < 1.0


async def test_close_cancels_a_round_in_progress_and_start_twice_is_one_task():
    started = asyncio.Event()

    async def tick() -> None:
        started.set()
        await asyncio.sleep(3600)

    ticker = Periodic("slow", tick, lambda: 1.0)
    ticker.start()
    ticker.start()
    await asyncio.wait_for(started.wait(), 2)
    assert len([t for t in asyncio.all_tasks() if t.get_name() == "slow"]) == 1
    await asyncio.wait_for(ticker.close(), 2)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "slow"]
