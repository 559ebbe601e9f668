"""Identity checks: PIN or date of birth, one-time codes to the phone on file, and the lockout.

The lookups here run the ``verify_identity`` journey (config/journeys/verify_identity.yaml):

- ``verification_options``: a customer the conversation already names (by a claim: caller ID,
  cookie) is offered a one-time code to the phone on file or a PIN/date-of-birth check; a
  stranger gives the account number first; a locked customer is offered the code or an agent.
- ``verify_identity``: account number (or the claimed customer's) plus PIN or date of birth.
- ``send_one_time_code`` / ``check_one_time_code``: a code by SMS to the phone on file.

Failed checks are counted **per customer** (the account being tried), across conversations,
channels and nodes, in the shared counters: ``trust.max_failed_checks`` within
``failed_checks_window_minutes`` lock that customer's PIN/date-of-birth check for
``lockout_minutes``, even against the right answer. Each lock is written to the conversation's
log (``VerificationLocked``) and shows on the screen-pop. A code to the phone on file still
works while the lock holds (it reaches only the real customer), so an attacker who locks an
account does not lock its owner out; codes have their own per-customer limits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from datetime import date

from gateway.config import TrustSettings
from gateway.context.counters import Counters
from gateway.core.actions import SendFollowUp
from gateway.core.channels import Channel
from gateway.core.lookups import Lookup, LookupContext, Outcome, customer_slots
from gateway.core.outbound import OutboundPolicy

if TYPE_CHECKING:
    from gateway.context.callbacks import Callbacks

log = logging.getLogger(__name__)

MAX_CHECKS_PER_CONVERSATION = 3
"""Failed checks in one conversation before the caller is handed to an agent (whatever the
per-customer count: a stranger guessing unknown account numbers is stopped too)."""
MAX_CODES_PER_CUSTOMER_PER_HOUR = 5
"""One-time codes sent to one customer's phone in an hour, across conversations: bounds the
SMS cost an attacker can cause and the guesses they get (5 codes x 3 tries)."""
MAX_WRONG_CODES_PER_CUSTOMER_PER_HOUR = 10
"""Wrong code entries for one customer in an hour before codes are refused too."""

CODE_SMS = ("Your verification code is {code}. It expires in {minutes} minutes. "
            "We will never call you to ask for it.")


@dataclass(frozen=True)
class TrustServices:
    """What the identity checks need beyond the CRM: settings, shared counters, outbound limits."""

    settings: TrustSettings
    counters: Counters
    policy: OutboundPolicy
    callbacks: "Callbacks | None" = None
    """Scheduled callbacks (a customer who would rather be called than wait for an agent)."""


def _services(ctx: LookupContext) -> TrustServices:
    if ctx.services is None or ctx.turn is None:
        raise RuntimeError("identity checks run inside a dialog turn with trust services")
    return ctx.services


def _lock_key(customer_id: str) -> str:
    return f"verify:{customer_id}"


async def _locked(services: TrustServices, customer_id: str) -> bool:
    return bool(customer_id) and await services.counters.locked_until(_lock_key(customer_id)) > 0


async def verification_options(ctx: LookupContext) -> Outcome:
    """``known`` (the conversation names a customer with a phone on file), ``unknown``, or
    ``locked`` (that customer's PIN check is locked; a code is still offered)."""
    services = _services(ctx)
    customer = await ctx.crm.get_customer(ctx.customer_id) if ctx.customer_id else None
    if customer is None:
        return Outcome("unknown")
    slots = {"phone_last4": customer.phone[-4:], "customer_first_name": customer.name.split()[0]}
    if await _locked(services, customer.id):
        return Outcome("locked", slots)
    return Outcome("known", slots)


async def verify_identity(ctx: LookupContext) -> Outcome:
    """Check PIN or date of birth against the account said (or the claimed customer's)."""
    services = _services(ctx)
    turn = ctx.turn
    assert turn is not None
    cfg = services.settings
    secret = ctx.slots.get("secret") or {}
    dob = secret.get("date") if isinstance(secret, dict) else None
    pin = secret.get("pin") if isinstance(secret, dict) else None
    account = str(ctx.slots.get("account_number", ""))
    claimed = await ctx.crm.get_customer(ctx.customer_id) if ctx.customer_id else None
    target = await ctx.crm.find_customer_by_account(account) if account else claimed
    if target is not None and await _locked(services, target.id):
        log.info("identity check refused: customer %s is locked", target.id)
        turn.ledger.data["locked_account"] = target.id
        return Outcome("locked", clear=("account_number", "secret"))
    customer = await ctx.crm.verify_identity(
        target.account_number if target is not None else account,
        date_of_birth=date.fromisoformat(dob) if dob else None, pin=pin)
    if customer is not None and (claimed is None or customer.id == claimed.id):
        await services.counters.clear(_lock_key(customer.id))
        ctx.state.verify_failures = 0
        return Outcome("verified", customer_slots(customer), clear=("secret",), verified=("identity",),
                       method="knowledge", customer_id=customer.id)
    failures = ctx.state.verify_failures + 1
    ctx.state.verify_failures = failures
    clear = ("account_number", "secret") if account else ("secret",)
    if customer is not None:
        # the right secret of another customer than the one this conversation names: not a
        # guess at that account, but not this conversation's customer either
        log.info("identity check failed: the account is not this conversation's customer")
    elif target is not None:
        count = await services.counters.hit(_lock_key(target.id), window_seconds=cfg.failed_checks_window_minutes * 60)
        log.info("identity check failed for customer %s (%d in the window, %d in this conversation)",
                 target.id, count, failures)
        if count >= cfg.max_failed_checks:
            until = turn.now + cfg.lockout_minutes * 60
            await services.counters.lock(_lock_key(target.id), until)
            turn.ledger.data["locked_account"] = target.id
            turn.note("VerificationLocked", customer_id=target.id, failures=count, until=until,
                      session_channel=turn.channel)
            log.warning("customer %s: identity checks locked for %.0f minutes after %d failures",
                        target.id, cfg.lockout_minutes, count)
            return Outcome("locked", clear=clear)
    else:
        log.info("identity check failed: no such account (%d in this conversation)", failures)
    if failures >= MAX_CHECKS_PER_CONVERSATION:
        return Outcome("too_many", clear=clear)
    return Outcome("failed", clear=clear)


async def send_one_time_code(ctx: LookupContext) -> Outcome:
    """Text a one-time code to the phone on file of the customer the conversation names."""
    services = _services(ctx)
    turn = ctx.turn
    assert turn is not None
    customer = await ctx.crm.get_customer(ctx.customer_id) if ctx.customer_id else None
    if customer is None or not customer.phone:
        return Outcome("unavailable")
    if not await services.counters.take(f"code-sent:{customer.id}", limit=MAX_CODES_PER_CUSTOMER_PER_HOUR,
                                        window_seconds=3600):
        log.warning("customer %s: one-time code refused: %d codes in the last hour", customer.id,
                    MAX_CODES_PER_CUSTOMER_PER_HOUR)
        return Outcome("unavailable")
    refusal = await services.policy.authorize("sms", turn.record.id, customer.phone)
    if refusal is not None:
        return Outcome("unavailable")
    minutes = services.settings.code_minutes
    code = turn.ledger.new_code(turn.party.session_id, turn.now, minutes * 60)
    sms = SendFollowUp(channel=Channel.SMS, template="one_time_code", to=customer.phone, conversation_id=turn.record.id,
                       text=CODE_SMS.format(code=code, minutes=int(minutes)), secret=True)
    return Outcome("sent", {"phone_last4": customer.phone[-4:]}, actions=(sms,))


async def check_one_time_code(ctx: LookupContext) -> Outcome:
    """The code said or keyed against the one sent to this session: ``verified``, ``wrong``
    (tries left) or ``void`` (expired, used up, never sent to this session)."""
    services = _services(ctx)
    turn = ctx.turn
    assert turn is not None
    entered = str(ctx.slots.get("one_time_code", ""))
    wrong_key = f"code-wrong:{ctx.customer_id}"
    if await services.counters.count(wrong_key, window_seconds=3600) >= MAX_WRONG_CODES_PER_CUSTOMER_PER_HOUR:
        turn.ledger.data.pop("code", None)
        return Outcome("void", clear=("one_time_code",))
    result = turn.ledger.check_code(turn.party.session_id, entered, turn.now, services.settings.code_attempts)
    if result == "ok":
        customer = await ctx.crm.get_customer(ctx.customer_id)
        if customer is None:
            return Outcome("void", clear=("one_time_code",))
        return Outcome("verified", customer_slots(customer), clear=("one_time_code",), verified=("identity",),
                       method="one_time_code", customer_id=customer.id)
    await services.counters.hit(wrong_key, window_seconds=3600)
    return Outcome(result, clear=("one_time_code",))


VERIFICATION_LOOKUPS: dict[str, Lookup] = {
    "verification_options": verification_options,
    "verify_identity": verify_identity,
    "send_one_time_code": send_one_time_code,
    "check_one_time_code": check_one_time_code,
}
