"""Placing the callbacks customers booked instead of waiting for an agent.

Every ``outreach.poll_seconds`` the poller claims the callbacks that are due
(:mod:`gateway.context.callbacks`: claiming is atomic, so two nodes never place one twice) and
asks the core to call (``CallAccepted`` on the ``outreach`` channel: the core dials the number on
file with its callback nonce, under the outbound policy and its budgets). When the customer
answers they hear that it is the callback they booked and go to the agents' queue with the
screen-pop ready (``gateway.core.dialog``). A callback whose conversation is gone is dropped; one
the core could not take (a store error) is tried again after the claim expires.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from gateway.context.callbacks import Callbacks
from gateway.context.store import StoreError
from gateway.core.events import CallAccepted
from gateway.core.port import ConversationPort
from gateway.periodic import Periodic

log = logging.getLogger(__name__)


class BookedCallbacks:
    def __init__(self, core: ConversationPort, callbacks: Callbacks, *, poll_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._core = core
        self._callbacks = callbacks
        self._poll = poll_seconds
        self._clock = clock
        self._ticker = Periodic("booked callbacks", self.run_once, lambda: self._poll, expected=(StoreError,))
        self.placed = 0

    async def run_once(self, now: float | None = None) -> int:
        """Place every callback due at ``now``; how many were handed to the core."""
        now = self._clock() if now is None else now
        placed = 0
        for callback in await self._callbacks.claim_due(now):
            cid = callback.conversation_id
            try:
                await self._core.handle(cid, CallAccepted(channel="outreach"))
            except LookupError:
                log.warning("booked callback of conversation %s dropped: the conversation is gone", cid)
            except StoreError as exc:
                log.warning("booked callback of conversation %s not placed yet: %s", cid, exc)
                continue
            await self._callbacks.done(cid)
            placed += 1
            log.info("booked callback of conversation %s handed to the core (queue %s)", cid, callback.queue)
        self.placed += placed
        return placed

    def start(self) -> None:
        self._ticker.start()

    async def close(self) -> None:
        await self._ticker.close()
