"""Callbacks the customer books when the agents' queue is long (``config/journeys/long_wait.yaml``).

``schedule_callback`` reads when the customer wants to be called (``callback_when``: "in an hour",
"at 3 pm", "tomorrow morning", "as soon as possible"), books it in the scheduled callbacks
(:mod:`gateway.context.callbacks`) with the queue the conversation was going to, and remembers on
the conversation that its next call the gateway places is that callback: when the customer
answers, after the disclosure, they hear that it is the callback they asked for and go straight
to the queue, the screen-pop ready. The call itself is placed by the core like every outbound
call: to the number on file, under the outbound policy.
"""

from __future__ import annotations

import datetime as dt
import logging

from gateway.context.callbacks import ScheduledCallback
from gateway.core.dialog_state import PendingTransfer
from gateway.core.lookups import LookupContext, Outcome, spoken_datetime
from gateway.core.nlu.when import ASAP, parse_when

log = logging.getLogger(__name__)

MAX_AHEAD = dt.timedelta(days=7)
"""A callback further ahead than this is not booked (ask again)."""
ASAP_SECONDS = 60.0
""""As soon as possible" is the next poll after this (the customer has time to hang up)."""


async def schedule_callback(ctx: LookupContext) -> Outcome:
    """``scheduled`` (with ``callback_when_spoken``), ``unclear`` or ``no_phone``."""
    turn, services = ctx.turn, ctx.services
    if turn is None or services is None or services.callbacks is None:
        return Outcome("error")
    customer = await ctx.crm.get_customer(ctx.customer_id) if ctx.customer_id else None
    if customer is None or not customer.phone:
        return Outcome("no_phone")
    now = dt.datetime.fromtimestamp(turn.now).astimezone()
    when = parse_when(str(ctx.slots.get("callback_when", "")), now)
    if when is None or (when != ASAP and not now < when <= now + MAX_AHEAD):  # type: ignore[operator]
        return Outcome("unclear", clear=("callback_when",))
    due = turn.now + ASAP_SECONDS if when == ASAP else when.timestamp()  # type: ignore[union-attr]
    pending = ctx.state.pending_transfer or PendingTransfer("")
    queue = pending.queue
    await services.callbacks.schedule(ScheduledCallback(turn.record.id, due, queue, pending.skills, pending.reason))
    ctx.state.callback_for_agent = pending
    if when == ASAP:
        spoken = "as soon as an agent is free"
    elif when.date() == now.date():  # type: ignore[union-attr]
        spoken = "today at " + spoken_datetime(when).split(" at ")[1]  # type: ignore[arg-type]
    else:
        spoken = "on " + spoken_datetime(when)  # type: ignore[arg-type]
    turn.note("CallbackScheduled", due_at=due, queue=queue)
    log.info("conversation %s: callback booked for %s (queue %s)", turn.record.id, int(due), queue)
    return Outcome("scheduled", {"callback_when_spoken": spoken}, clear=("callback_when",))


CALLBACK_LOOKUPS = {"schedule_callback": schedule_callback}
