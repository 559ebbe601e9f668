"""The campaign runner: works through running campaigns, one tick at a time.

Each tick (``run_once(now)``, deterministic for a given ``now``), on the node holding the
runner lease:

1. **Settle** attempts in progress from their conversation's log (:mod:`.rules`): a call's
   outcome (answered, machine, no answer, busy, congestion, failed, opted out, or unknown after
   ``campaigns.call_outcome_minutes``), a reminder SMS's reply (or none after the campaign's
   ``escalate_after_minutes``: a call follows). The contact is then reached, retried later with
   backoff, or closed.
2. **Launch** due contacts: outside quiet hours in the contact's time zone (else deferred to
   their end, no attempt used), not on the do-not-call list, within the campaign's pace
   (attempts started in the last minute) and concurrency (calls open), each claimed in one
   transaction before anything is sent. A reminder SMS goes out as outreach sends it
   (:func:`~gateway.digital.outreach.send_reminder`, through the outbound policy); a call is
   asked of the core with ``CallAccepted(channel="outreach")``, so the core places it to the
   number on file, under its policy and budgets, with its callback nonce.

Nothing is done twice: a claim is written before the SMS is sent or the call asked for, and
the core logs ``Originate`` before the telephony channel dials. An attempt a crashed runner left
claimed is settled from the log by the next holder of the lease (:meth:`Campaigns.recover`):
the call it shows was placed is awaited, never placed again; one it does not show is
``interrupted`` and retried after the backoff like a busy line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from datetime import datetime, timezone
from typing import Any, Callable

from gateway.config import Settings
from gateway.context.store import ContextStore, StoreError
from gateway.core.actions import Originate
from gateway.core.events import CallAccepted, CallStarted
from gateway.core.outbound import OutboundPolicy
from gateway.core.port import ConversationPort
from gateway.digital.campaigns.lease import RunnerLease
from gateway.digital.campaigns.model import (Attempt, AttemptState, Campaign, CampaignState, Contact,
                                             ContactStatus, Outcome)
from gateway.digital.campaigns.rules import call_outcome, next_kind, quiet_until, read_log, verdict
from gateway.digital.campaigns.store import CampaignStore
from gateway.digital.followup import FollowUps
from gateway.digital.outbox import Outbox
from gateway.digital.outreach import open_reminder, send_reminder
from gateway.digital.sms import SmsSender
from gateway.metrics import Metrics
from gateway.periodic import Periodic

log = logging.getLogger(__name__)

MAX_LOG_EVENTS = 2000
"""Latest events of a conversation read to settle an attempt (a call's log is far shorter)."""
DEFERRALS_PER_TICK = 200
"""Due contacts looked at per campaign and tick beyond those the pace lets through (contacts
in quiet hours are deferred without using the pace)."""


class Campaigns:
    """Runs campaigns over the core; ``clock`` returns the current time as an aware datetime."""

    def __init__(self, settings: Settings, core: ConversationPort, conversations: ContextStore,
                 store: CampaignStore, lease: RunnerLease, *, policy: OutboundPolicy, sms: SmsSender,
                 followups: FollowUps, outbox: Outbox, metrics: Metrics,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc), node: str = "") -> None:
        self._settings = settings
        self._core = core
        self._conversations = conversations
        self.store = store
        self.lease = lease
        self._policy = policy
        self._sms = sms
        self._followups = followups
        self._outbox = outbox
        self._metrics = metrics
        self._clock = clock
        self.node = node or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._held = False
        self._ticker = Periodic("campaigns", self.run_once, lambda: self._settings.campaigns.poll_seconds,
                                expected=(StoreError, OSError, ValueError))

    # ------------------------------------------------------------------ the tick
    async def run_once(self, now: datetime | None = None) -> bool:
        """One tick as of ``now``; False when another node holds the runner lease."""
        moment = now or self._clock()
        t = moment.timestamp()
        held, before = await self.lease.hold(self.node, t)
        if held != self._held:
            log.info("campaign runner lease %s by %s%s", "taken" if held else "held elsewhere:", self.node if held
                     else before, f" (from {before})" if held and before else "")
            self._held = held
            if held:  # whoever held it before may have left attempts half done
                await self.recover(t)
        if not held:
            return False
        for campaign in await self.store.campaigns():
            if campaign.state not in (CampaignState.RUNNING, CampaignState.PAUSED):
                continue
            try:
                await self._settle(campaign, t)
                if campaign.state is CampaignState.RUNNING:
                    await self._launch(campaign, moment)
                    if not await self.store.unfinished(campaign.name):
                        await self.store.set_state(campaign.name, CampaignState.DONE, t,
                                                   allowed_from=(CampaignState.RUNNING,))
                        log.info("campaign %s done", campaign.name)
            except StoreError as exc:
                log.error("campaign %s: tick stopped: %s", campaign.name, exc)
        return True

    async def recover(self, now: float) -> None:
        """Settle attempts another runner claimed and never carried out or recorded."""
        for campaign in await self.store.campaigns():
            for attempt in await self.store.open_attempts(campaign.name, state=AttemptState.CLAIMED):
                if attempt.node != self.node:
                    log.warning("campaign %s: attempt %d of %s was claimed by %s and left open; settling it from "
                                "the log", campaign.name, attempt.n, attempt.ref, attempt.node)
                    await self._resolve_claimed(campaign, attempt, now)

    # ------------------------------------------------------------------ settling
    async def _events(self, attempt: Attempt) -> list[Any]:
        if not attempt.conversation_id or attempt.baseline < 0:
            return []
        return await self._conversations.events(attempt.conversation_id, limit=MAX_LOG_EVENTS)

    async def _settle(self, campaign: Campaign, now: float) -> None:
        cfg, opts = campaign.config, self._settings.campaigns
        for attempt in await self.store.open_attempts(campaign.name, state=AttemptState.PLACED):
            if attempt.kind == "sms" and now - attempt.placed_at < cfg.escalate_after_minutes * 60:
                continue
            facts = read_log(await self._events(attempt), attempt.baseline)
            if attempt.kind == "sms":
                outcome = (Outcome.OPTED_OUT if facts.opted_out else Outcome.REPLIED if facts.replied
                           else Outcome.NO_REPLY)
            else:
                found = call_outcome(facts, placed_at=attempt.placed_at, now=now,
                                     outcome_wait=opts.call_outcome_minutes * 60, max_call=opts.max_call_minutes * 60)
                if found is None:
                    continue
                outcome = found
            await self._conclude(campaign, attempt, outcome, now, replied=facts.replied)

    async def _resolve_claimed(self, campaign: Campaign, attempt: Attempt, now: float) -> None:
        """A claimed attempt whose carrying out was cut short: placed if the log (or the outbox,
        for an SMS) shows it went out, else interrupted."""
        facts = read_log(await self._events(attempt), attempt.baseline)
        if attempt.kind == "call" and facts.originated:
            await self.store.placed(attempt, attempt.started_at)
        elif attempt.kind == "call" and facts.refused:
            await self._refused(campaign, attempt, facts.refused, now)
        elif attempt.kind == "sms" and attempt.conversation_id and any(
                m.direction == "out" and m.conversation_id == attempt.conversation_id
                for m in self._outbox.messages(to=(await self._contact(attempt)).phone, limit=50)):
            await self.store.placed(attempt, attempt.started_at)
        else:
            await self._conclude(campaign, attempt, Outcome.INTERRUPTED, now)

    async def _contact(self, attempt: Attempt) -> Contact:
        contact = await self.store.contact(attempt.campaign, attempt.ref)
        if contact is None:
            raise StoreError(f"campaign {attempt.campaign}: contact {attempt.ref} is gone")
        return contact

    async def _conclude(self, campaign: Campaign, attempt: Attempt, outcome: Outcome, now: float, *,
                        replied: bool = False, detail: str = "") -> None:
        contact = await self._contact(attempt)
        calls_made = attempt.n - (1 if contact.sms_sent and campaign.config.sms_first else 0)
        result = verdict(campaign.config, contact, outcome, now=now, calls_made=calls_made, replied=replied,
                         detail=detail)
        await self.store.finish(attempt, result.outcome, result.status, result.next_at, now, detail)
        self._metrics.inc("voicegw_campaign_attempts_total", kind=attempt.kind, outcome=result.outcome.value)
        log.info("campaign %s: %s attempt %d of %s: %s%s -> %s", campaign.name, attempt.kind, attempt.n, attempt.ref,
                 result.outcome.value, f" ({detail})" if detail else "", result.status.value)
        if result.status in (ContactStatus.OPTED_OUT, ContactStatus.DNC):
            try:  # the number this campaign used too (the core listed the session's own numbers)
                if self._policy.dnc is not None:
                    await self._policy.dnc.add(contact.phone, source="campaign", conversation_id=attempt.conversation_id)
            except (StoreError, ValueError) as exc:
                log.warning("campaign %s: %s not added to the do-not-call list: %s", campaign.name, attempt.ref, exc)

    async def _refused(self, campaign: Campaign, attempt: Attempt, reason: str, now: float) -> None:
        outcome = Outcome.DNC if reason == "do_not_call" else Outcome.REFUSED
        await self._conclude(campaign, attempt, outcome, now, detail=reason)

    # ------------------------------------------------------------------ launching
    async def _launch(self, campaign: Campaign, moment: datetime) -> None:
        cfg, t = campaign.config, moment.timestamp()
        started, calls = await self.store.pace(campaign.name, t)
        for contact in await self.store.due(campaign.name, t, cfg.calls_per_minute + DEFERRALS_PER_TICK):
            if started >= cfg.calls_per_minute:
                break  # the claim checks again, atomically; this only saves it the work
            until = quiet_until(moment, contact.tz, cfg)
            if until is not None:
                await self.store.defer(campaign.name, contact.ref, until.timestamp())
                continue
            if await self._policy.listed(contact.phone):
                await self.store.close_contact(campaign.name, contact.ref, ContactStatus.DNC, Outcome.DNC)
                log.info("campaign %s: %s is on the do-not-call list; not contacted", campaign.name, contact.ref)
                continue
            kind = next_kind(cfg, contact)
            if kind == "call" and calls >= cfg.max_concurrent:
                continue
            attempt = await self.store.claim(contact, kind, t, self.node, rate=cfg.calls_per_minute,
                                             concurrency=cfg.max_concurrent)
            if attempt is None:
                continue
            started, calls = started + 1, calls + (kind == "call")
            try:
                if kind == "sms":
                    await self._send_sms(campaign, contact, attempt, t)
                else:
                    await self._place_call(campaign, contact, attempt, t)
            except (StoreError, LookupError, OSError, asyncio.TimeoutError) as exc:
                log.error("campaign %s: %s attempt %d of %s failed: %s", campaign.name, kind, attempt.n,
                          contact.ref, exc)
                current = next((a for a in await self.store.open_attempts(campaign.name, state=AttemptState.CLAIMED)
                                if a.ref == attempt.ref and a.n == attempt.n), None)
                if current is not None:
                    await self._resolve_claimed(campaign, current, t)

    async def _baseline(self, conversation_id: str) -> int:
        events = await self._conversations.events(conversation_id, limit=1)
        return events[-1].seq if events else 0

    async def _send_sms(self, campaign: Campaign, contact: Contact, attempt: Attempt, now: float) -> None:
        opened = await open_reminder(self._core, customer_id=contact.customer_id, number=contact.phone,
                                     journey=campaign.config.journey,
                                     ref=f"campaign:{campaign.name}:{contact.ref}:{attempt.n}")
        attempt = await self.store.attach(attempt, opened.conversation_id, await self._baseline(opened.conversation_id))
        organisation = self._settings.compliance.organisation
        text = contact.text or f"Hello{' ' + contact.name if contact.name else ''}, a reminder from {organisation}."
        # without a customer on file the journey can only ask who they are: the list's words go instead
        why_not = await send_reminder(opened, number=contact.phone, text=text, link_purpose="chat", sms=self._sms,
                                      followups=self._followups, policy=self._policy,
                                      journey_words=bool(contact.customer_id))
        if not why_not:
            await self.store.placed(attempt, now)
            log.info("campaign %s: reminder SMS %d to %s sent (conversation %s)", campaign.name, attempt.n,
                     contact.ref, opened.conversation_id)
        elif why_not == "send_failed":
            await self._conclude(campaign, attempt, Outcome.FAILED, now, detail=why_not)
        else:
            await self._refused(campaign, attempt, why_not, now)

    async def _place_call(self, campaign: Campaign, contact: Contact, attempt: Attempt, now: float) -> None:
        cid = contact.conversation_id
        if not cid:  # a call first: the conversation waits, at its journey, for the answered call
            opened = await self._core.open(
                "outreach", customer_id=contact.customer_id, caller_id=contact.phone, journey=campaign.config.journey,
                event=CallStarted(channel="outreach", caller_id=contact.phone, outbound=True,
                                  call_id=f"campaign:{campaign.name}:{contact.ref}:{attempt.n}"))
            cid = opened.conversation_id
        attempt = await self.store.attach(attempt, cid, await self._baseline(cid))
        actions = await self._core.handle(cid, CallAccepted(channel="outreach"))
        if any(isinstance(a, Originate) for a in actions):
            await self.store.placed(attempt, now)
            log.info("campaign %s: call %d to %s placed (conversation %s)", campaign.name, attempt.n, contact.ref, cid)
            return
        facts = read_log(await self._events(attempt), attempt.baseline)
        await self._refused(campaign, attempt, facts.refused or "no_number_on_file", now)

    # ------------------------------------------------------------------ background
    def start(self) -> None:
        """Tick every ``campaigns.poll_seconds`` in the background."""
        self._ticker.start()

    async def close(self) -> None:
        """Stop ticking and hand the lease back (the files belong to whoever opened them)."""
        await self._ticker.close()
        if self._held:
            try:
                await self.lease.release(self.node)
            except StoreError as exc:
                log.warning("campaign runner lease not released: %s", exc)
